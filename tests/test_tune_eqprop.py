"""The EqProp Pareto search: the non-dominated filter against a hand-checked front, the analytic costs,
the presets, and (slow) the CI-sized search on Ray Tune end to end."""
from __future__ import annotations

import json

import pytest

from actors.common.errors import InputError


def test_pareto_front_hand_checked():
    from tune.eqprop import pareto_front

    objectives = {"acc": "max", "ms": "min", "mb": "min"}
    pts = [
        {"acc": 0.95, "ms": 10.0, "mb": 4.0},   # 0: best accuracy                       -> front
        {"acc": 0.90, "ms": 2.0, "mb": 1.0},    # 1: fastest and smallest                -> front
        {"acc": 0.90, "ms": 3.0, "mb": 1.0},    # 2: dominated by 1 (slower, same rest)
        {"acc": 0.93, "ms": 5.0, "mb": 2.0},    # 3: a trade-off                         -> front
        {"acc": 0.92, "ms": 6.0, "mb": 2.0},    # 4: dominated by 3
        {"acc": 0.93, "ms": 5.0, "mb": 2.0},    # 5: a tie with 3: neither dominates     -> front
        {"acc": 0.80, "ms": 1.0, "mb": 8.0},    # 6: fastest of all                      -> front
        {"acc": 0.95, "ms": 10.0, "mb": 5.0},   # 7: dominated by 0 (more memory)
    ]
    assert pareto_front(pts, objectives) == [0, 1, 3, 5, 6]
    assert pareto_front(pts[:1], objectives) == [0]
    assert pareto_front([{"acc": 1.0}, {"acc": 2.0}], {"acc": "min"}) == [0]
    with pytest.raises(InputError) as e:
        pareto_front(pts, {"acc": "maximise"})
    assert e.value.field == "objectives.acc"


def test_model_costs_by_hand():
    from tune.eqprop import model_costs

    c = model_costs({"sizes": [64, 16, 10], "steps_free": 10}, batch_size=64)
    params = 64 * 16 + 16 + 16 * 10 + 10                      # 1210
    assert c["parameters"] == params
    assert c["train_memory_mb"] == pytest.approx(4 * (4 * params + 3 * 64 * 26) / 2**20)
    assert c["mflops"] == pytest.approx(2 * 10 * 2 * (64 * 16 + 16 * 10) / 1e6)   # 0.04736


def test_search_presets_load():
    from configs import preset
    from tune.trainer import load_search_spec

    for name in ("search_eqprop_digits.yaml", "search_eqprop_mnist.yaml"):
        spec = load_search_spec(preset("train", name))
        assert spec.train.model.name == "eqprop_mlp" and spec.inline


@pytest.mark.slow
def test_ci_search_on_ray_tune(ray_cluster, tmp_path):
    """configs/train/search_eqprop_digits.yaml (4 trials of 220 steps) on the 2-CPU test cluster: every
    trial finishes, the written front is the filter applied to the trials, the table and plot exist."""
    from actors.trainer.eqprop.data import EqPropDataSpec, write_dataset
    from configs import preset
    from tune.eqprop import OBJECTIVES, pareto_front, search_pareto
    from tune.trainer import load_search_spec

    write_dataset(EqPropDataSpec(dataset="digits", seed=0), tmp_path / "digits")
    spec = load_search_spec(preset("train", "search_eqprop_digits.yaml"))
    r = search_pareto(spec, tmp_path / "digits", tmp_path / "out")
    assert r["n_trials"] == 4 and r["n_done"] == 4
    done = json.loads((tmp_path / "out" / "pareto.json").read_text())["trials"]
    front = [done[i] for i in pareto_front(done, OBJECTIVES)]
    assert [t["config"] for t in r["front"]] == [t["config"] for t in front] and front
    assert max(t["accuracy"] for t in done) > 0.85                 # 10 epochs of digits
    assert (tmp_path / "out" / "pareto.md").read_text().count("\n| sizes=") == len(front)
    assert (tmp_path / "out" / "pareto.png").stat().st_size > 10_000
    with pytest.raises(InputError) as e:
        search_pareto(spec.model_copy(update={"scheduler": "pbt"}), tmp_path / "digits", tmp_path / "x")
    assert e.value.field == "scheduler"
