"""Parameter-recovery job: plant parameters, observe a noisy trajectory, fit them back with Ray Tune.

    python -m jobs.fit [--config configs/fit/gaslit_fit.yaml] [--out DIR] [--num-samples N]
    ray job submit --working-dir . -- python -m jobs.fit --out DIR

Writes DIR/fit.json (FitResult, written atomically), DIR/fit.png (observed vs fitted trajectory)
and the Tune experiment under DIR/tune/. Prints true vs fitted vs relative error; the exit code is
0 only when every fitted parameter is within the config's tolerance (5 %) of its planted value.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from actors.common.errors import InputError

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "fit" / "gaslit_fit.yaml"


def write_json_atomic(path: Path, payload: dict) -> Path:
    """Write to a temp file in the same folder, then os.replace: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, indent=2, default=float)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def plot_fit(spec, result, path: Path) -> Path:
    """Observed points against the fitted trajectory (and the planted one, dashed), one panel per state."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from actors.sweep.models import get_model
    from tune.fit_ode import make_observations, simulate_params

    model = get_model(spec.model)
    t, y_obs = make_observations(spec)
    dense = np.linspace(t[0], t[-1], 2000)
    fitted = simulate_params(spec, result.best_params, dense)
    planted = simulate_params(spec, {}, dense)
    states = spec.observed
    fig, axes = plt.subplots(len(states), 1, figsize=(10, 1.9 * len(states)), sharex=True, squeeze=False)
    for k, s in enumerate(states):
        ax = axes[k, 0]
        i = model.state_names.index(s)
        ax.plot(t, y_obs[:, k], ".", ms=3, color="0.45", label="observed")
        ax.plot(dense, planted[:, i], "--", lw=1.0, color="tab:green", label="planted")
        ax.plot(dense, fitted[:, i], "-", lw=1.0, color="tab:red", label="fitted")
        ax.set_ylabel(s)
    axes[0, 0].legend(loc="upper left", ncol=3, fontsize=8)
    axes[-1, 0].set_xlabel("t")
    fitted_txt = ", ".join(f"{n}={v:.4g} ({100 * result.rel_errors[n]:.2f}%)" for n, v in result.best_params.items())
    fig.suptitle(f"{spec.model}: {spec.name}  |  {fitted_txt}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def table(result) -> str:
    lines = [f"{'param':<10} {'true':>12} {'tune best':>12} {'fitted':>12} {'rel.err':>9}"]
    for n in result.best_params:
        ok = "ok" if result.rel_errors[n] < result.tolerance else "FAIL"
        lines.append(f"{n:<10} {result.true_params[n]:>12.6g} {result.tune_best_params[n]:>12.6g} "
                     f"{result.best_params[n]:>12.6g} {100 * result.rel_errors[n]:>8.3f}% {ok}")
    lines.append(f"loss: tune best {result.tune_best_loss:.3e}, polished {result.polished_loss:.3e}, "
                 f"noise floor {result.noise_floor:.3e}; {result.n_trials} trials "
                 f"({result.n_full_horizon} reached the full horizon); "
                 f"tune {result.tune_seconds:.1f}s, polish {result.polish_seconds:.1f}s")
    return "\n".join(lines)


def write_outputs(spec, result, out_dir: Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    payload = {"spec": spec.model_dump(mode="json"), "result": result.to_dict()}
    return write_json_atomic(out_dir / "fit.json", payload), plot_fit(spec, result, out_dir / "fit.png")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(DEFAULT_CONFIG), help="fit YAML (configs/fit/*.yaml)")
    ap.add_argument("--out", default="runs/fit", help="output directory (default runs/fit)")
    ap.add_argument("--num-samples", type=int, default=None, help="Tune trials (default: the config's)")
    ap.add_argument("--seed", type=int, default=None, help="noise and sampler seed (default: the config's)")
    ap.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or embedded)")
    args = ap.parse_args(argv)

    from tune.fit_ode import fit, load_spec

    try:
        spec = load_spec(args.config, num_samples=args.num_samples, seed=args.seed)
    except (InputError, ValueError) as exc:
        print(f"invalid fit config {args.config}: {exc}", file=sys.stderr)
        return 2
    from cluster import connect

    connect(args.address)
    out_dir = Path(args.out).resolve()
    try:
        result = fit(spec, storage_path=out_dir / "tune")
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    json_path, png_path = write_outputs(spec, result, out_dir)
    print(table(result))
    print(f"wrote {json_path} and {png_path}")
    if not result.ok:
        print(f"FAILED: max relative error {100 * result.max_rel_error:.2f}% >= {100 * spec.tolerance:g}%",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
