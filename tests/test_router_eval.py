"""The router's evaluation: data loading and its errors (named columns), the embedding cache, the
predictor's numpy forward pass against sklearn, KMeans domains, the energy score against its closed
form, folds held out by subject and nothing fitted on the evaluated fold, and jobs.route_eval end to
end on a seeded subsample of the shared data (metrics recomputed from scores.parquet; bad input exit 2)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import actors.common.embeddings as emb
from actors.common.errors import InputError
from actors.router.config import DomainConfig, PredictorConfig, RouteEvalSpec
from actors.router.data import COLUMNS, load_routes, rewards
from actors.router.evaluate import Prepared, assign_folds, fold_apgr, prepare, run_fold
from actors.router.metrics import Outcomes, evaluate_scores, random_metrics
from actors.router.predictor import fit_domains, fit_predictor
from actors.router.router import fit_router
from configs import preset, presets
from jobs import cli
from jobs.route_eval import main

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "routellm"


def shared_file(name: str) -> Path:
    path = SHARED / name
    assert path.is_file(), f"the shared routing data is missing: {path} (CI keeps ../shared/data beside the checkout)"
    return path


def small_frame(n: int = 6, benchmark: str = "toy") -> pd.DataFrame:
    return pd.DataFrame({
        "prompt_id": [f"{benchmark}/{i}" for i in range(n)], "route_id": [f"{benchmark}/{i}" for i in range(n)],
        "benchmark": benchmark, "category": ["a", "b"] * (n // 2), "prompt": [f"question number {i}?" for i in range(n)],
        "strong_score": [1.0, 1.0, 0.0, 1.0, 1.0, 0.0][:n], "weak_score": [0.0, 1.0, 0.0, 0.0, 1.0, 1.0][:n],
        "contaminated": [False] * (n - 1) + [True], "source_row": np.arange(n, dtype=np.int32)})


# ---- data ----------------------------------------------------------------------------------------------
def test_shared_files_load_as_the_readme_says():
    d = load_routes([shared_file("gsm8k.parquet"), shared_file("mmlu.parquet")])
    counts = d.frame.groupby("benchmark").size().to_dict()
    assert counts == {"gsm8k": 1307, "mmlu": 7655} and d.dropped_contaminated == {"gsm8k": 12, "mmlu": 3}
    assert d.strong_model == "gpt-4-1106-preview" and d.weak_model == "mistralai/Mixtral-8x7B-Instruct-v0.1"
    g = d.frame[d.frame.benchmark == "gsm8k"]
    assert g["strong_score"].mean() * 100 == pytest.approx(85.769, abs=5e-4)
    assert g["weak_score"].mean() * 100 == pytest.approx(63.734, abs=5e-4)
    assert d.frame[d.frame.benchmark == "mmlu"]["category"].iloc[0] == "clinical_knowledge"  # RouteLLM order (first kept)
    assert not d.frame["contaminated"].any()


@pytest.mark.parametrize("mutate,field", [
    (lambda f: f.drop(columns="weak_score"), "weak_score"),
    (lambda f: f.drop(columns="category"), "category"),
    (lambda f: f.assign(strong_score=f["strong_score"].astype(str)), "strong_score"),
    (lambda f: f.assign(contaminated=f["contaminated"].astype(int)), "contaminated"),
    (lambda f: f.assign(source_row=f["source_row"].astype(float)), "source_row"),
    (lambda f: f.assign(prompt=["ok"] * 5 + ["  "]), "prompt"),
    (lambda f: f.assign(weak_score=[0.0, np.nan, 1, 1, 1, 1]), "weak_score"),
    (lambda f: f.assign(prompt_id=["x"] * 6), "prompt_id"),
    (lambda f: f.assign(benchmark=[None] + ["toy"] * 5), "benchmark"),
])
def test_bad_files_name_the_column(tmp_path, mutate, field):
    path = tmp_path / "bad.parquet"
    mutate(small_frame()).to_parquet(path)
    with pytest.raises(InputError) as e:
        load_routes(path)
    assert e.value.field == field and ("bad.parquet" in str(e.value) or field == "prompt_id")


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(InputError) as e:
        load_routes(tmp_path / "nope.parquet")
    assert e.value.field == "data"
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(InputError) as e:
        load_routes(tmp_path / "junk.parquet")
    assert e.value.field == "data"
    assert set(COLUMNS) == set(pq.read_schema(shared_file("gsm8k.parquet")).names)


def test_multi_row_routes_and_rewards(tmp_path):
    f = small_frame().assign(route_id=["r0", "r0", "r1", "r1", "r2", "r2"], strong_score=[9.0, 7, 10, 2, 5, 6],
                             weak_score=[3.0, 8, 1, 1, 5, 4], contaminated=False)
    f.to_parquet(tmp_path / "mt.parquet")
    d = load_routes(tmp_path / "mt.parquet")
    routes = d.routes()
    assert routes["route_id"].tolist() == ["r0", "r1", "r2"] and routes["n_rows"].tolist() == [2, 2, 2]
    assert routes["prompt"].tolist() == ["question number 0?", "question number 2?", "question number 4?"]  # first turn
    r_s, r_w = rewards(f["strong_score"].to_numpy(), f["weak_score"].to_numpy(), f["benchmark"].to_numpy())
    np.testing.assert_allclose(r_s, f["strong_score"] / 10) and np.testing.assert_allclose(r_w, f["weak_score"] / 10)


# ---- embeddings cache ------------------------------------------------------------------------------------
def test_embedding_cache_skips_encoding_and_returns_the_stored_rows(tmp_path, monkeypatch):
    texts = ["How many legs does a spider have?", "Solve 3x + 2 = 11.", "How many legs does a spider have?"]
    fresh = emb.embed(texts)
    cache = emb.EmbeddingCache(tmp_path)
    first = emb.embed(texts, cache=cache)
    np.testing.assert_allclose(first, fresh, atol=1e-6)
    np.testing.assert_array_equal(first[0], first[2])
    shards = list(tmp_path.glob("*.npz"))
    assert len(shards) == 1 and oct(shards[0].stat().st_mode & 0o777) == "0o644"

    def no_encoding(*a, **k):
        raise AssertionError("a cached text was encoded again")

    monkeypatch.setattr(emb, "_encode", no_encoding)
    again = emb.embed(texts, cache=emb.EmbeddingCache(tmp_path))     # a new process's view of the directory
    np.testing.assert_array_equal(again, first)
    assert len(emb.EmbeddingCache(tmp_path)) == 2
    (tmp_path / "junk.npz").write_bytes(b"torn")                     # a foreign file is ignored
    np.testing.assert_array_equal(emb.embed(texts[:1], cache=emb.EmbeddingCache(tmp_path)), first[:1])


def test_validation_uses_the_shared_encoder():
    import actors.validation.text as text

    assert text.embed is emb.embed and text.model is emb.model


# ---- predictor, domains, router --------------------------------------------------------------------------
def _toy(n=300, seed=0):
    rng = np.random.default_rng(seed)
    E = rng.normal(size=(n, 384))
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    y = (E[:, :3].sum(1) + rng.normal(0, 0.05, n) > 0).astype(int)
    return E, y


@pytest.mark.parametrize("kind", ["logistic", "mlp"])
def test_predictor_forward_equals_sklearn(kind):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    E, y = _toy()
    cfg = PredictorConfig(kind=kind, hidden=16, max_iter=300, seed=3)
    pred = fit_predictor(E, y, cfg)
    if kind == "logistic":
        ref = LogisticRegression(C=cfg.C, max_iter=cfg.max_iter).fit(E, y)
    else:
        ref = MLPClassifier(hidden_layer_sizes=(16,), alpha=cfg.alpha, max_iter=300, early_stopping=True,
                            validation_fraction=0.1, n_iter_no_change=20, random_state=3).fit(E, y)
    np.testing.assert_allclose(pred.predict(E), ref.predict_proba(E)[:, 1], rtol=1e-9, atol=1e-12)
    assert pred.kind == kind
    const = fit_predictor(E, np.ones(len(E), int))
    assert const.kind == "constant" and np.all(const.predict(E) == 1.0)


def test_prompt_stats_by_hand():
    from actors.router.features import PROMPT_STATS, prompt_stats

    open_q = "Tom has 3 apples and 1,200.5 pears. How many?"          # 45 chars, 9 words, 2 numbers, 6 digits
    mc_q = "Which?\nA. 12 cats\nB. 7 dogs\nAnswer:"                     # 35 chars, 8 words, 2 numbers, 3 digits
    S = prompt_stats([open_q, mc_q])
    assert S.shape == (2, len(PROMPT_STATS)) == (2, 11)
    first = [np.log(1 + 45 / 4), np.log(3), np.log(7), 1.0, np.log(10)]
    second = [np.log(1 + 35 / 4), np.log(3), np.log(4), 1.0, np.log(9)]
    np.testing.assert_allclose(S[0], first + first + [0.0], rtol=1e-15)
    np.testing.assert_allclose(S[1], second + [0.0] * 5 + [1.0], rtol=1e-15)


def test_predictor_with_prompt_stats_standardises_on_training_rows(tmp_path):
    from sklearn.linear_model import LogisticRegression

    from actors.router.router import load_router, save_router

    E, y = _toy()
    rng = np.random.default_rng(1)
    S = rng.normal(3.0, 2.0, size=(len(E), 11))
    S[:, 4] = 5.0                                                  # a constant column: scale 1, not 0
    X = np.hstack([E, S])
    pred = fit_predictor(X, y, PredictorConfig(prompt_stats=True))
    assert pred.dim == 384 and pred.n_stats == 11
    sd = S.std(0)
    sd[4] = 1.0
    Z = np.hstack([E, (S - S.mean(0)) / sd])
    ref = LogisticRegression(C=1.0, max_iter=2000).fit(Z, y)
    np.testing.assert_allclose(pred.predict(X), ref.predict_proba(Z)[:, 1], rtol=1e-9, atol=1e-12)
    with pytest.raises(InputError) as err:
        pred.predict(E)                                            # the statistics are missing
    assert err.value.field == "embeddings"
    reward = np.stack([1.0 - y, y.astype(float)], axis=1)
    r = fit_router(X, y * 1.0, reward, [RouteEvalSpec().weak, RouteEvalSpec().strong], 1,
                   predictor=PredictorConfig(prompt_stats=True), domains=DomainConfig(n_domains=4))
    assert r.domains.centroids.shape == (4, 384)                    # domains from the embedding only
    np.testing.assert_array_equal(r.features(X)[1], r.domains.assign(E))
    loaded = load_router(save_router(r, tmp_path / "r"))
    np.testing.assert_array_equal(loaded.score(X, np.ones(len(X))), r.score(X, np.ones(len(X))))


def test_domains_are_seeded_kmeans():
    from sklearn.cluster import KMeans

    E, _ = _toy(200)
    dom = fit_domains(E, DomainConfig(n_domains=5, seed=2))
    km = KMeans(n_clusters=5, n_init=10, random_state=2).fit(E)
    np.testing.assert_allclose(dom.centroids, km.cluster_centers_)
    np.testing.assert_array_equal(dom.assign(E), km.predict(E))
    assert fit_domains(E[:3], DomainConfig(n_domains=10)).n_domains == 3


def test_energy_score_matches_its_closed_form():
    """For two models the Boltzmann probability of the strong one is sigmoid((E_weak - E_strong) / T) with
    E_weak - E_strong = w_q (mu_s - mu_w + rho (p - pbar)) - w_c (c_s - c_w) - w_l (l_s - l_w) - w_u (sd_s - sd_w)."""
    from actors.router.config import EnergyConfig, ModelCard

    E, y = _toy(400)
    gain = np.where(y == 1, 1.0, 0.0)
    reward = np.stack([1 - gain, np.ones_like(gain)], 1)
    cards = [ModelCard(name="w", cost=1.0, latency_s=1.0), ModelCard(name="s", cost=10.0, latency_s=3.0)]
    en = EnergyConfig(w_cost=1.5, w_quality=3.0, w_latency=0.2, w_uncertainty=2.0, w_context=1.0, rho=0.7,
                      temperature=0.4)
    r = fit_router(E, gain, reward, cards, 1, domains=DomainConfig(n_domains=4), energy=en)
    p, d = r.features(E)
    a, b = r.posterior.alpha, r.posterior.beta
    mu, sd = a / (a + b), np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    delta = (3.0 * (mu[1, d] - mu[0, d] + 0.7 * (p - r.p_domain_mean[d])) - 1.5 * (1 - 0.1) - 0.2 * (1 - 1 / 3)
             - 2.0 * (sd[1, d] - sd[0, d]))
    np.testing.assert_allclose(r.score(E, np.full(400, 10.0), "energy"), 1 / (1 + np.exp(-delta / 0.4)), rtol=1e-10)
    np.testing.assert_array_equal(r.score(E, np.full(400, 10.0), "energy_t0"), (delta > 0).astype(float))
    th = r.score(E, np.full(400, 10.0), "thompson", rng=np.random.default_rng(0))
    rng = np.random.default_rng(0)
    draw = rng.beta(a[:, d], b[:, d])
    np.testing.assert_array_equal(th, draw[1] - draw[0])
    # the posteriors are the conjugate counts of the training rewards per domain
    np.testing.assert_allclose(a[1], 1 + np.bincount(d, minlength=r.domains.n_domains))


# ---- folds: held out by subject, nothing fitted on the evaluated fold ------------------------------------
def _frame(n_per=40, seed=0) -> pd.DataFrame:
    """Two benchmarks: 'many' with 10 categories (split by category), 'one' with one (split by prompt)."""
    rng = np.random.default_rng(seed)
    rows = []
    for b, n_cat in (("many", 10), ("one", 1)):
        for i in range(n_per * (2 if b == "many" else 1)):
            rows.append({"prompt_id": f"{b}/{i}", "route_id": f"{b}/{i}", "benchmark": b,
                         "category": f"c{i % n_cat}", "prompt": f"{b} {i}", "strong_score": float(rng.random() > 0.2),
                         "weak_score": float(rng.random() > 0.4), "contaminated": False, "source_row": i})
    return pd.DataFrame(rows)


def _prepared(n_per=40, seed=0) -> Prepared:
    """_frame's routes with seeded random unit embeddings (drawn after the frame's scores, as before)."""
    from actors.router.data import RouteData

    rng = np.random.default_rng(seed)
    frame = _frame(n_per, seed)
    rng.random(2 * len(frame))                            # the draws _frame made from the same stream
    data = RouteData(frame=frame, files=("x",))
    E = rng.normal(size=(len(frame), 384))
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    return prepare(data, E, np.full(len(frame), 20.0))


def test_folds_hold_out_whole_categories_or_prompts():
    prep = _prepared()
    folds, kinds = assign_folds(prep.routes, 5, seed=0)
    assert kinds == {"many": "category", "one": "prompt"}
    many = prep.routes["benchmark"] == "many"
    per_cat = pd.Series(folds[many]).groupby(prep.routes["category"][many].to_numpy()).nunique()
    assert (per_cat == 1).all()                                      # a subject lies in one fold
    sizes = np.bincount(folds[~many], minlength=5)
    assert sizes.max() - sizes.min() <= 1 and set(folds) == set(range(5))


def test_nothing_is_fitted_on_the_evaluated_fold():
    spec = RouteEvalSpec(domains=DomainConfig(n_domains=3), eval={"n_folds": 4, "n_bootstrap": 0})
    prep = _prepared()
    prep.folds, prep.fold_kind = assign_folds(prep.routes, 4, 0)
    base = run_fold(prep, 1, spec)
    test = prep.folds == 1
    prep.gain = np.where(test, -prep.gain + 1, prep.gain)          # change the held-out outcomes only
    prep.reward = np.where(test[:, None], 1 - prep.reward, prep.reward)
    changed = run_fold(prep, 1, spec)
    for m in base.scores:
        np.testing.assert_array_equal(base.scores[m], changed.scores[m])
    prep.gain = np.where(~test, 1 - prep.gain, prep.gain)           # training outcomes do matter
    assert not np.array_equal(run_fold(prep, 1, spec).scores["predictor"], base.scores["predictor"])


def test_online_mode_learns_from_the_fold_it_scores():
    spec = RouteEvalSpec(domains=DomainConfig(n_domains=3), online=True, eval={"n_folds": 4})
    prep = _prepared()
    prep.folds, prep.fold_kind = assign_folds(prep.routes, 4, 0)
    a = run_fold(prep, 2, spec)
    assert np.array_equal(a.scores["predictor"], run_fold(prep, 2, spec.model_copy(update={"online": False}))
                          .scores["predictor"])
    test = prep.folds == 2
    prep.reward = np.where(test[:, None], 1 - prep.reward, prep.reward)
    b = run_fold(prep, 2, spec)
    assert not np.array_equal(a.scores["energy"], b.scores["energy"])     # feedback from the fold moved it


# ---- the job end to end ----------------------------------------------------------------------------------
def test_presets_load_and_the_documented_one_is_the_default():
    specs = {p.name: cli.load_spec(RouteEvalSpec, p) for p in presets("router") if not p.name.startswith("search")}
    assert {"ci_small.yaml", "routellm_cv.yaml"} <= set(specs)
    assert specs["routellm_cv.yaml"].model_dump(exclude={"name"}) == RouteEvalSpec().model_dump(exclude={"name"})
    with pytest.raises(InputError) as e:
        cli.load_spec(RouteEvalSpec, None, {"eval.n_folds": 1})
    assert e.value.field == "eval.n_folds"
    with pytest.raises(InputError) as e:
        cli.load_spec(RouteEvalSpec, None, {"weak": {"name": "gpt-4-1106-preview", "cost": 1.0}})
    assert e.value.field == "weak"                # strong and weak must differ


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("route_eval") / "run"
    cache = tmp_path_factory.mktemp("emb_cache")
    argv = ["--data", str(shared_file("gsm8k.parquet")), "--data", str(shared_file("mmlu.parquet")), "--out", str(out),
            "--no-ray", "--config", str(preset("router", "ci_small.yaml")), "--set", f"embedding.cache_dir={cache}"]
    assert main(argv) == 0
    return out, argv


def test_job_outputs_and_metrics_recomputed_from_scores(small_run):
    out, _ = small_run
    for name in ("scores.parquet", "metrics.json", "curve.png", "metrics.md", "ablations.md", "summary.json",
                 "router/router.json", "router/router.npz"):
        assert (out / name).is_file(), name
    scores = pd.read_parquet(out / "scores.parquet")
    assert list(scores.columns[:2]) == ["route_id", "score"]
    assert {"score_energy_t0", "score_thompson", "score_predictor", "fold"} <= set(scores.columns)
    assert scores["score"].between(0, 1).all() and set(scores["score_energy_t0"]) <= {0.0, 0.5, 1.0}
    metrics = json.loads((out / "metrics.json").read_text())
    spec = RouteEvalSpec.model_validate(metrics["spec"])
    data = load_routes([shared_file("gsm8k.parquet"), shared_file("mmlu.parquet")], max_rows=150, seed=0)
    for b in ("gsm8k", "mmlu"):
        frame = data.frame[data.frame.benchmark == b]
        o = Outcomes.from_rows(frame["strong_score"].to_numpy(), frame["weak_score"].to_numpy())
        s = scores.set_index("route_id").loc[frame["route_id"], "score"].to_numpy()
        m = metrics["benchmarks"][b]
        assert m["routers"]["router"]["apgr"] == pytest.approx(evaluate_scores(s, o).apgr, abs=1e-12)
        assert m["routers"]["random"]["apgr"] == pytest.approx(random_metrics(o).apgr, abs=1e-12)
        assert m["all_weak"] == pytest.approx(o.weak_perf) and m["n_routes"] == 150
        lo, hi = m["routers"]["router"]["ci"]["apgr"]
        assert lo <= hi and m["routers"]["router"]["vs_random_ci"]["apgr"][0] <= m["routers"]["router"]["vs_random_ci"]["apgr"][1]
    assert metrics["benchmarks"]["mmlu"]["folds"] == "category" and metrics["benchmarks"]["gsm8k"]["folds"] == "prompt"
    assert spec.eval.n_folds == 3 and "targets" in metrics
    assert "| router (energy + Boltzmann, T>0) |" in (out / "metrics.md").read_text()


def test_job_refuses_a_different_run_in_the_same_dir_and_bad_files(small_run, tmp_path, capsys):
    out, argv = small_run
    assert main(argv + ["eval.n_folds=4"]) == 2
    assert "out" in capsys.readouterr().err
    bad = tmp_path / "bad.parquet"
    small_frame().drop(columns="strong_score").to_parquet(bad)
    assert main(["--data", str(bad), "--out", str(tmp_path / "o"), "--no-ray"]) == 2
    err = capsys.readouterr().err
    assert "strong_score" in err and "bad.parquet" in err
    assert main(["--data", str(shared_file("gsm8k.parquet")), "--out", str(tmp_path / "o2"), "--no-ray",
                 "--set", "eval.n_folds=1"]) == 2
    assert "eval.n_folds" in capsys.readouterr().err
    assert main(["--data", str(shared_file("gsm8k.parquet")), "--train", str(shared_file("gsm8k.parquet")),
                 "--out", str(tmp_path / "o3"), "--no-ray"]) == 2
    assert "train" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_folds_as_ray_tasks_equal_the_in_process_run(ray_cluster, small_run, tmp_path):
    out, argv = small_run
    ray_argv = [a for a in argv if a != "--no-ray"]
    ray_argv[ray_argv.index("--out") + 1] = str(tmp_path / "ray")
    assert main(ray_argv) == 0
    a = pd.read_parquet(out / "scores.parquet")
    b = pd.read_parquet(tmp_path / "ray" / "scores.parquet")
    pd.testing.assert_frame_equal(a, b)
    assert os.path.getsize(tmp_path / "ray" / "curve.png") > 10_000


def test_public_api_resolves_without_ray():
    """actors.router's __all__ (both helpers' engine names) all resolve; importing them loads no Ray."""
    import subprocess
    import sys

    code = ("import sys, actors.router as r\n"
            "missing = [n for n in r.__all__ if getattr(r, n, None) is None]\n"
            "print(missing, any(m == 'ray' or m.startswith('ray.') for m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[] False"


# ---- the Tune search (tune/router.py, jobs.tune_router) --------------------------------------------------
def _search_spec(**kw):
    from tune.router import RouterSearchSpec

    base = RouteEvalSpec(domains=DomainConfig(n_domains=3), eval={"n_folds": 4, "n_bootstrap": 0})
    return RouterSearchSpec(base=base, outer_folds=5, inner_folds=4, **kw)


def test_search_split_holds_the_test_split_out_by_subject():
    from tune.router import split

    prep = _prepared()
    inner, test = split(prep, _search_spec())
    ids_in, ids_test = set(inner.routes["route_id"]), set(test.routes["route_id"])
    assert not ids_in & ids_test and ids_in | ids_test == set(prep.routes["route_id"])
    many_in = set(inner.routes.loc[inner.routes.benchmark == "many", "category"])
    many_test = set(test.routes.loc[test.routes.benchmark == "many", "category"])
    assert many_test and not many_in & many_test                    # whole subjects held out
    assert test.fold_kind == {"many": "category", "one": "prompt"}
    # the subsets' outcomes are the original routes' outcomes
    pos = {r: i for i, r in enumerate(prep.routes["route_id"])}
    for part in (inner, test):
        for b, o in part.outcomes.items():
            own = [pos[r] for r in part.routes.loc[part.routes.benchmark == b, "route_id"]]
            local = np.searchsorted(np.flatnonzero(prep.routes["benchmark"].to_numpy() == b), own)
            np.testing.assert_array_equal(o.gain, prep.outcomes[b].gain[local])
            np.testing.assert_array_equal(o.weak, prep.outcomes[b].weak[local])
    cats = inner.routes.loc[inner.routes.benchmark == "many"].assign(f=inner.folds[inner.routes.benchmark == "many"])
    assert (cats.groupby("category")["f"].nunique() == 1).all()        # inner folds are by subject too


def test_fold_apgr_is_the_metric_of_the_folds_own_rows():
    from tune.router import split, trial_spec

    spec = _search_spec()
    inner, _ = split(_prepared(80), spec)               # >= 10 routes (n_bins) of each benchmark per inner fold
    base = trial_spec(spec.base, {})
    res = run_fold(inner, 1, base)
    got = fold_apgr(inner, res, base)
    raw = _frame(80).set_index("route_id")                   # recomputed from the raw row scores
    rows = inner.routes.iloc[res.index]
    assert set(got) == {"many", "one"}
    for b in got:
        ids = rows.loc[(rows["benchmark"] == b).to_numpy(), "route_id"]
        out = Outcomes.from_rows(raw.loc[ids, "strong_score"].to_numpy(), raw.loc[ids, "weak_score"].to_numpy())
        sel = (rows["benchmark"] == b).to_numpy()
        assert got[b] == pytest.approx(evaluate_scores(res.scores["energy"][sel], out, 10).apgr, abs=1e-12)


def test_trial_spec_sets_the_searched_fields_and_bad_bounds_name_their_field():
    from tune.router import RouterSearchSpec, trial_spec

    spec = _search_spec()
    t = trial_spec(spec.base, {"w_quality": 2.0, "w_uncertainty": -1.5, "rho": 0.5, "n_domains": 7,
                               "predictor_C": 0.1})
    assert (t.energy.w_quality, t.energy.w_uncertainty, t.energy.rho) == (2.0, -1.5, 0.5)
    assert (t.domains.n_domains, t.predictor.C, t.ablations) == (7, 0.1, ())
    assert t.energy.w_cost == spec.base.energy.w_cost and t.eval == spec.base.eval
    for overrides, field in (({"space.rho": [2.0, 1.0]}, "space.rho"), ({"space.predictor_C": [0, 1]}, "space.predictor_C"),
                             ({"test_fold": 5}, "test_fold"), ({"inner_folds": 1}, "inner_folds")):
        with pytest.raises(InputError) as e:
            cli.load_spec(RouterSearchSpec, preset("router", "search_ci.yaml"), overrides)
        assert e.value.field == field


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_tune_router_job_on_the_shared_data(ray_cluster, tmp_path):
    from actors.router.evaluate import fit_and_score, prepare_routes
    from jobs.tune_router import main as tune_main
    from tune.router import RouterSearchSpec, split, trial_spec

    cache, out = tmp_path / "emb", tmp_path / "run"
    files = [str(shared_file("gsm8k.parquet")), str(shared_file("mmlu.parquet"))]
    argv = ["--data", files[0], "--data", files[1], "--out", str(out), "--config",
            str(preset("router", "search_ci.yaml")), "--set", f"base.embedding.cache_dir={cache}"]
    assert tune_main(argv) == 0
    res = json.loads((out / "search.json").read_text())
    spec = cli.load_spec(RouterSearchSpec, preset("router", "search_ci.yaml"),
                         {"base.embedding.cache_dir": str(cache)})
    assert res["n_trials"] == 4 == len(pd.read_parquet(out / "trials.parquet"))
    for k, (lo, hi) in spec.space.model_dump().items():
        if k in res["best"]:
            assert lo <= res["best"][k] <= hi, k
    assert {b: r["folds"] for b, r in res["test"].items()} == {"gsm8k": "prompt", "mmlu": "category"}
    assert os.path.getsize(out / "search.png") > 10_000
    # the base row of the test table, recomputed here: base fitted on the inner split, scored on the test split
    data = load_routes(files, max_rows=spec.base.max_rows, seed=spec.base.eval.seed)
    inner, test = split(prepare_routes(data, spec.base), spec)
    frame, _ = fit_and_score(inner, test, trial_spec(spec.base, {}))
    for b, o in test.outcomes.items():
        s = frame.loc[(frame["benchmark"] == b).to_numpy(), "score"].to_numpy()
        assert res["test"][b]["base"]["apgr"] == pytest.approx(evaluate_scores(s, o, 10).apgr, abs=1e-12)
    assert res["n_routes"] == {"inner": len(inner.routes), "test": len(test.routes)}
