from lipspace.prep.runs import true_runs


def test_runs_at_edges_inside_and_none():
    assert true_runs([1, 1, 0, 1, 0, 0, 1]) == [(0, 2), (3, 4), (6, 7)]
    assert true_runs([0, 0]) == [] and true_runs([]) == []
    assert true_runs([True] * 3) == [(0, 3)]
