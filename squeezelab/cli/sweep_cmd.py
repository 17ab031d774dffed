"""``squeezelab sweep``: run a study file's trials (grid / random / TPE on Optuna), resumably.

    squeezelab sweep experiments/fig3a_sr.yaml --scale smoke --dry-run
    squeezelab sweep experiments/fig3a_sr.yaml --scale cpu --workers 2 -o studies/fig3a-cpu
    squeezelab sweep experiments/fig3a_sr.yaml --scale full --storage postgresql://user@host/db -o DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

from squeezelab.cli import args as argtypes


def register(subparsers) -> None:
    p = subparsers.add_parser("sweep", help="run a study (grid / random / TPE over config keys x seeds)",
                              description="Run the trials of a study file, each an ordinary run folder under "
                                          "the study folder. The same command again continues: finished "
                                          "trials never re-run, a killed worker's trial is re-run.")
    p.add_argument("study", help="study file (experiments/*.yaml)")
    p.add_argument("--scale", default="smoke", help="smoke | cpu | full (default smoke)")
    p.add_argument("--workers", type=argtypes.integer(1, 256), default=1, help="worker processes on this machine sharing the storage")
    p.add_argument("--storage", help="SQLAlchemy URL (default: sqlite in the study folder); postgresql://... "
                                     "lets workers on many machines share one study")
    p.add_argument("-o", "--out", help="study folder (default: studies/<name>-<scale>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override for every trial, e.g. --set train.threads=1 (part of the study's identity)")
    p.add_argument("--dry-run", action="store_true", help="list the trials with params / FLOPs / cost and the wall time they will take here "
                        "(with -o: kept in DIR/estimate.json for the report); run none")
    p.add_argument("--heartbeat", type=argtypes.integer(1, 3600), default=10,
                   help="seconds between trial heartbeats; a trial silent for 3 of them is re-run (default 10)")
    p.add_argument("--worker-index", type=argtypes.integer(0, 255), default=0, help=argparse.SUPPRESS)
    p.add_argument("--spawned", action="store_true", help=argparse.SUPPRESS)  # a worker of a --workers N sweep
    p.set_defaults(func=_sweep)


def _sweep(args) -> int:
    from squeezelab.config import parse_set_args
    from squeezelab.experiments.study import load_study
    from squeezelab.experiments.sweep import SweepOptions, plan, run_sweep

    extra = parse_set_args(args.set)
    study = load_study(args.study, args.scale, extra)
    if extra:  # --set changes what is trained: it is part of the study's identity
        study.raw["extra"] = extra
    if args.dry_run:
        rows = plan(study, extra)
        _print_plan(study, rows)
        est = _print_estimate(study, extra, args.workers, rows)
        if est is not None and args.out:  # kept in the study folder: the report sets the real wall time beside it
            from squeezelab import runtime

            Path(args.out).mkdir(parents=True, exist_ok=True)
            runtime.atomic_write_json(Path(args.out) / "estimate.json",
                                      {k: est[k] for k in ("seconds", "threads", "workers", "per_run")})
        return 0
    out = Path(args.out or f"studies/{study.name}-{study.scale}")
    opts = SweepOptions(out=out, storage=args.storage, extra=extra, heartbeat=args.heartbeat,
                        worker=args.worker_index)
    argv = [args.study, "--scale", args.scale, "-o", str(out), "--heartbeat", str(args.heartbeat),
            *(["--storage", args.storage] if args.storage else []), *[f"--set={s}" for s in args.set]]
    if args.spawned:
        argv.append("--spawned")
    return run_sweep(study, opts, args.workers, argv, log=lambda line: print(line, flush=True))


def _print_plan(study, rows: list[dict]) -> None:
    kind = "grid" if study.sampler == "grid" else f"{study.sampler}, {study.n_trials} trials x {len(study.seeds)} seeds"
    print(f"{study.name} ({study.scale}, {kind}): base {study.base}")
    print(f"{'trial':<40}{'params':>12}{'MB fp32':>10}{'MFLOPs':>10}{'epochs':>7}{'cost GFLOP':>12}  note")
    total = 0.0
    for r in rows:
        note = f"pruned: {r['pruned']}" if r["pruned"] else ""
        total += 0 if r["pruned"] else r["cost_flops"]
        print(f"{r['name']:<40}{r['params']:>12,}{r['size_mb']:>10.3f}{r['flops'] / 1e6:>10.1f}{r['epochs']:>7}"
              f"{r['cost_flops'] / 1e9:>12.3f}  {note}")
    per = rows[0]["cost_per"] if rows else "training image"
    runs = len(rows) if study.sampler == "grid" else study.n_trials * len(study.seeds)
    print(f"{runs} runs; estimated cost: {total / 1e9:,.3f} GFLOP per {per} (3 x forward FLOPs x epochs)"
          + ("" if study.sampler == "grid" else " summed over the listed choices"))


def _print_estimate(study, extra, workers: int, rows: list[dict]) -> dict | None:
    from squeezelab.errors import ConfigError
    from squeezelab.experiments.estimate import estimate

    try:
        est = estimate(study, extra, workers, rows)
    except ConfigError as err:  # e.g. the data is not there yet: the plan above still stands
        print(f"no wall-time estimate: {err}")
        return None
    longest = max(est["per_run"].values(), default=0.0)
    print(f"estimated wall time on this machine: {est['seconds'] / 60:.1f} min with {workers} worker(s) x "
          f"{est['threads']} thread(s) (each model's training step timed here; longest run {longest:.0f} s)")
    return est
