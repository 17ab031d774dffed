"""``squeezelab demo``: the README's main job (SqueezeNet vs AlexNet on the embedded digits)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from squeezelab.cli import args as argtypes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train SqueezeNet and AlexNet on the embedded digits (offline, CPU, ~2 min)",
                       description="Train the small-input SqueezeNet 1.1 and AlexNet on scikit-learn's real "
                                   "8x8 digits and print test accuracy, parameters and fp32 size side by side.")
    p.add_argument("--epochs", type=argtypes.COUNT, default=None, help="epochs for every model (default: 10 SqueezeNet, 3 AlexNet)")
    p.add_argument("--seed", type=argtypes.SEED, default=0)
    p.add_argument("--runs-dir", default="runs", help="where the run folders go (default runs/)")
    p.add_argument("--threads", type=argtypes.THREADS, default=None,
                   help="torch CPU threads (default: the cores idle when each run starts)")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep AlexNet's checkpoints too (~380 MB; by default the demo leaves ~25 MB: the SqueezeNet "
                        "runs, model.sqz, configs and metrics)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from squeezelab.jobs.demo import format_table, run_demo

    rows = run_demo(epochs=args.epochs, seed=args.seed, runs_dir=args.runs_dir, threads=args.threads,
                    progress=not args.json and sys.stderr.isatty(), keep_checkpoints=args.keep_checkpoints)
    print(json.dumps([asdict(r) for r in rows], indent=2) if args.json else format_table(rows))
    return 0
