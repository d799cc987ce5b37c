"""The demos: workflows over the tasks (train, evaluate) on the embedded synthetic head. ``run.run_compare`` is
``make demo`` (the four conditioning spaces compared), ``run.run_walkthrough`` is ``make demo-lipnerf``; ``compare``
holds the comparison's pieces (reuse of finished runs, the table, the side-by-side video)."""
