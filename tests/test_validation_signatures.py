"""Signature library: FAISS search equals a numpy brute-force cosine search, the library round-trips
through disk and grows by confirm(), column statistics match closed forms, and a freshly planted case
(new seed) is matched to its own pattern by a library seeded from the planted generator."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from actors.common.errors import InputError
from actors.validation.signatures import (
    FEATURES,
    SIGNATURE_STATISTICS,
    SignatureLibrary,
    column_statistics,
    planted_fingerprint,
    seed_library,
)


def _random_library(n: int, seed: int) -> tuple[SignatureLibrary, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    V = rng.standard_normal((n, len(FEATURES)))
    labels = [f"case{i % 7}" for i in range(n)]
    lib = SignatureLibrary()
    for i, (v, lab) in enumerate(zip(V, labels)):
        lib.add(v, lab, {"i": i})
    return lib, V, labels


def test_search_equals_numpy_bruteforce_cosine():
    lib, V, labels = _random_library(300, 0)
    U = V / np.linalg.norm(V, axis=1, keepdims=True)
    for q in np.random.default_rng(1).standard_normal((20, len(FEATURES))):
        sims = U @ (q / np.linalg.norm(q))          # float64 oracle
        order = np.argsort(-sims)[:5]
        got = lib.prescreen_risk(q.astype(np.float32), k=5)
        assert [m.meta["i"] for m in got] == order.tolist()
        assert [m.label for m in got] == [labels[i] for i in order]
        np.testing.assert_allclose([m.similarity for m in got], sims[order], atol=1e-5)
    assert len(lib.prescreen_risk(V[0], k=1000)) == 300
    assert lib.prescreen_risk(V[3], k=1)[0].similarity == pytest.approx(1.0, abs=1e-5)


def test_persistence_round_trip_and_confirm(tmp_path):
    lib, V, _ = _random_library(50, 2)
    lib.save(tmp_path / "lib")
    back = SignatureLibrary.load(tmp_path / "lib")
    np.testing.assert_array_equal(back.vectors(), lib.vectors())
    assert back.entries == lib.entries
    q = np.random.default_rng(3).standard_normal(len(FEATURES))
    assert back.prescreen_risk(q, 4) == lib.prescreen_risk(q, 4)
    back.confirm(q, "new_pattern", {"by": "test"})         # saved to the same directory
    again = SignatureLibrary.load(tmp_path / "lib")
    assert len(again) == 51
    top = again.prescreen_risk(q, 1)[0]
    assert (top.label, top.meta) == ("new_pattern", {"by": "test", "confirmed": True})
    # a sidecar that disagrees with the index (interrupted save) is refused, not silently misread
    side = json.loads((tmp_path / "lib" / "labels.json").read_text())
    side["entries"] = side["entries"][:-1]
    (tmp_path / "lib" / "labels.json").write_text(json.dumps(side))
    with pytest.raises(InputError, match="51 vectors but 50 labels"):
        SignatureLibrary.load(tmp_path / "lib")


def test_bad_inputs_name_the_field():
    lib = SignatureLibrary()
    with pytest.raises(InputError) as err:
        lib.add(np.ones(3), "x")
    assert err.value.field == "fingerprint"
    with pytest.raises(InputError) as err:
        lib.prescreen_risk(np.ones(len(FEATURES)), k=0)
    assert err.value.field == "k"
    with pytest.raises(InputError) as err:
        lib.save()
    assert err.value.field == "path"


def test_column_statistics_closed_forms():
    rng = np.random.default_rng(0)
    real = pd.DataFrame({"a": rng.standard_normal(400), "b": rng.standard_normal(400),
                         "g": rng.choice(["x", "y", "z"], 400)})
    stat = dict(zip(SIGNATURE_STATISTICS, column_statistics(real, real.copy())))
    assert stat["exact_copy_share"] == 1.0 and stat["mean_shift"] == 0.0 and stat["category_tv"] == 0.0
    wide = real.assign(a=real.a.mean() + 2 * (real.a - real.a.mean()), b=real.b.mean() + 2 * (real.b - real.b.mean()))
    stat = dict(zip(SIGNATURE_STATISTICS, column_statistics(real, wide)))
    assert stat["log_var_ratio"] == pytest.approx(np.tanh(np.log(4.0)))    # variance x 4 in every column
    assert stat["exact_copy_share"] == 0.0
    dropped = real.assign(g=real.g.replace("z", "x"))
    stat = dict(zip(SIGNATURE_STATISTICS, column_statistics(real, dropped)))
    share_z = (real.g == "z").mean()
    assert stat["category_coverage_loss"] == pytest.approx(1 / 3)
    assert stat["category_tv"] == pytest.approx(share_z)                   # TV = the mass moved


# Cases with distinct mechanisms. category_merge is left out on purpose: on a label it is the same
# corruption as category_dropout (rows of the rarest class take another class) and the two are
# matched to each other (docs/validation.md, signature library). clean is in the library but not
# queried: a fresh clean pair can sit nearer a medium collapse the detector barely sees.
CASES = ["clean", "mode_collapse", "variance_shrinkage", "recursive_collapse", "tail_truncation",
         "category_dropout", "correlation_breakage", "memorised", "label_noise", "missingness", "outliers"]


def test_fresh_planted_case_matches_its_own_pattern(tmp_path):
    lib = seed_library(CASES, severities=("medium", "high"), datasets=("wine",), seeds=(0,), path=tmp_path)
    assert len(lib) == 2 * len(CASES)
    lib = SignatureLibrary.load(tmp_path)
    misses = {}
    for case in CASES[1:]:   # planted cases at high severity (a clean query is no case; see docs)
        top = lib.prescreen_risk(planted_fingerprint(case, "high", "wine", seed=11), k=1)[0]
        if top.label != case:
            misses[case] = (top.label, round(top.similarity, 3))
    assert not misses, misses
