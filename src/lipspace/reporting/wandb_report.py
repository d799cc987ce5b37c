"""The study comparison dashboard as a W&B Report: its spec as plain data (testable offline) and a thin builder."""

from __future__ import annotations

import importlib.util

from lipspace.utils.errors import LipspaceError

# (summary key written by lipspace.reporting.wandb_eval.log_eval, label); LSE-D: lower is better, the others higher
METRICS = (("eval/lse_d", "LSE-D (lower is better)"), ("eval/lse_c", "LSE-C"), ("eval/psnr", "PSNR (dB)"),
           ("eval/mouth_psnr", "mouth PSNR (dB)"))
CONDITIONER_KEY = "config:run.conditioner"  # run_info, logged as the run's `run` config by train and log_eval
CLIP_KEY = "summary:train_seconds"  # seconds of footage trained on (log_eval: train_seconds, else clip_seconds)
REPORT_PACKAGE = "wandb-workspaces"
INSTALL_HINT = "pip install wandb-workspaces  (or: pip install 'wandb[workspaces]')"


def _q(value: str) -> str:
    """A string literal for W&B's filter expressions (parsed as Python)."""
    return repr(str(value))


def runset_specs(study: str, conditioners=None) -> list[dict]:
    """One run set per conditioner (each its own colour in every panel) when they are known, else one run set
    of the study grouped by conditioner; always filtered to the study's W&B group."""
    in_study = f"Metric('Group') == {_q(study)}"
    if conditioners:
        return [{"name": str(c), "filters": f"{in_study} and Config('run.conditioner') == {_q(c)}", "groupby": []}
                for c in conditioners]
    return [{"name": study, "filters": in_study, "groupby": ["config.run.conditioner"]}]


def panel_specs() -> list[dict]:
    """The dashboard's panels: each metric against clip length (one point per run, coloured by run set, i.e. by
    conditioner), each metric's mean ± stderr per conditioner, a parallel-coordinates view of all, and the runs
    table's columns."""
    panels = [{"kind": "scatter", "title": f"{label} vs clip length", "x": CLIP_KEY, "y": f"summary:{key}"}
              for key, label in METRICS]
    panels += [{"kind": "bar", "title": f"{label} by conditioner", "metrics": [f"summary:{key}"],
                "groupby": CONDITIONER_KEY, "aggfunc": "mean", "rangefunc": "stderr"} for key, label in METRICS]
    panels.append({"kind": "parallel_coordinates", "title": "conditioner × clip length × metrics",
                   "columns": [CONDITIONER_KEY, CLIP_KEY, *(f"summary:{k}" for k, _ in METRICS)]})
    panels.append({"kind": "runs_table", "title": "runs",
                   "columns": [CONDITIONER_KEY, "config:run.renderer", "config:run.clip_seconds", CLIP_KEY,
                               "config:run.seed", "config:run.budget", *(f"summary:{k}" for k, _ in METRICS),
                               "summary:eval/primary"]})
    return panels


def report_spec(project: str, study: str, entity: str | None = None, conditioners=None,
                title: str | None = None) -> dict:
    """Everything the report holds, as plain data."""
    return {"project": project, "entity": entity, "study": study,
            "title": title or f"lipspace: {study}",
            "description": f"LSE-D / LSE-C / PSNR of the `{study}` runs, by conditioner, against clip length "
                           "(held-out audio-driven rows where present, else the held-out tail).",
            "runsets": runset_specs(study, conditioners), "panels": panel_specs()}


def report_package_available() -> bool:
    return importlib.util.find_spec("wandb_workspaces") is not None


def require_report_package() -> None:
    if not report_package_available():
        raise LipspaceError(f"the W&B Reports API needs the `{REPORT_PACKAGE}` package, which is not installed: "
                            f"{INSTALL_HINT}")


# --- the thin part that needs the package and an online account ------------------------------------------------------

def _metric(key: str):
    import wandb_workspaces.reports.v2 as wr

    section, _, name = key.partition(":")
    return {"config": wr.Config, "summary": wr.SummaryMetric, "run": wr.Metric}[section](name)


def _column(key: str) -> str:
    """spec key -> runs-table column accessor (config keys carry a `.value` suffix there)."""
    section, _, name = key.partition(":")
    return f"config:{name}.value" if section == "config" else key


def build_report(spec: dict):
    """Turn a report_spec into wandb_workspaces objects (no network until save)."""
    import wandb_workspaces.reports.v2 as wr

    table = next((p for p in spec["panels"] if p["kind"] == "runs_table"), {"columns": []})
    runsets = [wr.Runset(entity=spec["entity"] or "", project=spec["project"], name=rs["name"],
                         filters=rs["filters"], groupby=list(rs["groupby"]),
                         pinned_columns=[_column(c) for c in table["columns"]]) for rs in spec["runsets"]]
    panels = []
    for p in spec["panels"]:
        if p["kind"] == "scatter":
            panels.append(wr.ScatterPlot(title=p["title"], x=_metric(p["x"]), y=_metric(p["y"])))
        elif p["kind"] == "bar":
            panels.append(wr.BarPlot(title=p["title"], metrics=[_metric(m) for m in p["metrics"]],
                                     groupby=_metric(p["groupby"]), groupby_aggfunc=p["aggfunc"],
                                     groupby_rangefunc=p["rangefunc"]))
        elif p["kind"] == "parallel_coordinates":
            panels.append(wr.ParallelCoordinatesPlot(
                title=p["title"], columns=[wr.ParallelCoordinatesPlotColumn(metric=_metric(c)) for c in p["columns"]]))
    kwargs = {"entity": spec["entity"]} if spec["entity"] else {}
    return wr.Report(project=spec["project"], title=spec["title"], description=spec["description"],
                     width="fluid", blocks=[wr.H1(spec["title"]), wr.P(spec["description"]),
                                            wr.PanelGrid(runsets=runsets, panels=panels)], **kwargs)


def study_conditioners(project: str, study: str, entity: str | None = None) -> list[str]:
    """The conditioners of the study's runs on the W&B server (config run.conditioner)."""
    import wandb

    path = f"{entity}/{project}" if entity else project
    runs = wandb.Api().runs(path, filters={"group": study})
    return sorted({str(c) for r in runs if (c := (r.config.get("run") or {}).get("conditioner"))})


def publish_report(spec: dict) -> str:
    """Save the report on the W&B server; returns its URL."""
    report = build_report(spec)
    report.save()
    return report.url
