"""jobs.bench.te_recovery: the planted systems, the scoring (indirect vs spurious false positives, checked on a
graph scored by hand), and a small run on the CPU writing its md / json / png."""
from __future__ import annotations

import json

import numpy as np
import pytest

from jobs.bench.te_recovery import SELF, coupling_matrix, main, planted_graph, score, simulate, true_edges


def test_planted_graph_and_stability():
    parents = planted_graph(100, 0)
    assert [p.tolist() for p in parents] == [p.tolist() for p in planted_graph(100, 0)]   # seeded
    assert all(1 <= p.size <= 3 and i not in p and np.unique(p).size == p.size for i, p in enumerate(parents))
    assert 150 <= len(true_edges(parents)) <= 250
    c = coupling_matrix(parents, 0, "linear")
    assert np.max(np.abs(np.linalg.eigvals(SELF * np.eye(100) + c))) < 0.95     # a stable VAR(1)
    assert {(j, i) for i, j in zip(*np.nonzero(c), strict=True)} == true_edges(parents)
    x = simulate(parents[:], 300, "tanh", 0)
    assert x.shape == (300, 100) and np.isfinite(x).all()


def test_score_splits_false_positives_by_hand():
    truth = {(0, 1), (1, 2), (3, 2)}
    found = {(0, 1), (0, 2), (2, 0), (1, 3)}   # (0, 2): 0 -> 1 -> 2, indirect; (2, 0) reversed path; (1, 3) noise
    s = score(found, truth)
    assert (s["tp"], s["fp"], s["fn"], s["fp_indirect"], s["fp_spurious"]) == (1, 3, 2, 1, 2)
    assert s["precision"] == pytest.approx(1 / 4) and s["recall"] == pytest.approx(1 / 3)
    assert score(set(), truth)["precision"] is None


def test_small_run_writes_outputs(tmp_path):
    out = tmp_path / "rec"
    assert main(["--nodes", "5", "--T", "500", "--surrogates", "9", "--alpha-biv", "0.1", "--alpha-mv", "0.1",
                 "--systems", "linear", "--out", str(out)]) == 0
    doc = json.loads((out / "te_recovery.json").read_text())
    assert [r["mode"] for r in doc["results"]] == ["bivariate", "multivariate"]
    assert doc["settings"]["true_edges"] == len(doc["truth"]) and doc["command"].startswith("python -m jobs")
    assert {"date", "host", "gpu", "versions"} <= doc.keys()
    mv = doc["results"][1]
    assert mv["precision"] == 1.0 and mv["recall"] >= 0.8, mv   # seeded; T = 500 is short for the weakest edges
    for r in doc["results"]:
        assert r == {**r, **score({tuple(e) for e in r["edges"]}, {tuple(e) for e in doc["truth"]})}
    assert "| linear | multivariate |" in (out / "te_recovery.md").read_text()
    assert (out / "te_recovery.png").stat().st_size > 0
