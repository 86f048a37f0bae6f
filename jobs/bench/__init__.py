"""Benchmarks: each one times a subsystem against its peers (or against itself at scale) and writes its
tables under --out. They are kept apart from the user jobs in `jobs/`; the numbers they produced are in
docs/benchmarks.md. Shared timing, statistics and table helpers live in `jobs.bench.lib`.

    python -m jobs.bench.ode --out DIR                       # GPU: generated Triton ODE kernels vs torch eager,
                                                             #   torchdiffeq, diffrax, scipy (--quick: smoke run)
    python -m jobs.bench.te --out DIR                        # TE network: pruned / brute-force Triton kernels vs
                                                             #   torch twin vs cKDTree; --gpus 1,2: 1 vs 2 GPUs
    .venv-bench/bin/python -m jobs.bench.validation --out DIR   # collapse detector vs Evidently, SDMetrics,
                                                             #   Cleanlab (baselines need the `bench` extra)
    python -m jobs.bench.validation_scale --out DIR          # streaming DetectCollapse at 1M x 50 rows, peak
                                                             #   memory (--memory-rows), ANN recall (--ann-rows)
    python -m jobs.bench.sweep_scaling --config configs/sweep/gaslit_scaling_gpu.yaml --gpus 1,2 --out DIR
                                                             # the same sweep on 1 and 2 GPUs, outputs identical
    python -m jobs.bench.load --out DIR                      # 16 clients per Serve app: req/s, p50/p99, 503s,
                                                             #   /healthz p99 (--tree: another checkout's apps)
    python -m jobs.bench.router --out DIR --model DIR        # router decision overhead, in-process and over HTTP
    python -m jobs.bench.router_ladder --out DIR             # parallel tempering vs annealing vs scipy milp
    python -m jobs.bench.trainer --out DIR                   # trainer tokens/s, MFU, step-time breakdown:
                                                             #   ddp / fsdp2 / ZeRO-3 on 1 and 2 ranks

`jobs.bench.validation_baselines` is not run on its own: it holds the adapters to the tools the
validation benchmark compares against. Every module takes --help.
"""
