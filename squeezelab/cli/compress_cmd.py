"""``squeezelab compress``: Deep Compression into a .sqz file, its report, and per-layer sensitivity.

    squeezelab compress RECIPE.yaml [-o DIR] [--set k=v]      (same as `compress run`)
    squeezelab compress report FILE.sqz [--dataset D --data-dir P]
    squeezelab compress sensitivity --weights W --dataset D [--data-dir P] [-o DIR]
"""

from __future__ import annotations

import json
from pathlib import Path

from squeezelab.cli import args as argtypes

SUBCOMMANDS = ("run", "report", "sensitivity")


def register(subparsers) -> None:
    p = subparsers.add_parser("compress", help="Deep Compression: prune, share weights, code into a .sqz file",
                              description=__doc__.splitlines()[0].replace("``", ""))
    sub = p.add_subparsers(dest="compress_command", required=True, parser_class=type(p))
    _register_run(sub)
    _register_report(sub)
    _register_sensitivity(sub)


def normalise_argv(argv: list[str]) -> list[str]:
    """``compress RECIPE.yaml ...`` means ``compress run RECIPE.yaml ...``."""
    if len(argv) >= 2 and argv[0] == "compress" and argv[1] not in SUBCOMMANDS and not argv[1].startswith("-"):
        return ["compress", "run", *argv[1:]]
    return argv


def _register_run(sub) -> None:
    p = sub.add_parser("run", help="run a compression recipe (stages of retraining, then a .sqz file)",
                       description="Run a compression recipe (configs/compress/*.yaml): each stage retrains from "
                                   "the previous one; the result is coded into DIR/model.sqz and measured. Running "
                                   "it again continues where it stopped.")
    p.add_argument("recipe", help="compression recipe (YAML)")
    p.add_argument("-o", "--out", help="output folder (default: runs/compress-<recipe name>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override: --set weights=W --set data.data_dir=P --set stages.share.train.epochs=2")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from squeezelab.config import load_compress_recipe
    from squeezelab.jobs.compress import compress, format_report

    recipe = load_compress_recipe(args.recipe, args.set)
    out = Path(args.out) if args.out else Path("runs") / f"compress-{Path(args.recipe).stem}"
    report = compress(recipe, out, progress=not args.no_progress)
    print(json.dumps(report) if args.json else format_report(report) + f"\nwritten: {out}/model.sqz, report.md, "
                                                                      "report.json")
    return 0


def _register_report(sub) -> None:
    p = sub.add_parser("report", help="the per-layer size table of a .sqz file (and its accuracy)",
                       description="Per layer: parameters, density, bits, bytes before/after; totals and ratios "
                                   "(paper Tables 1-2). With --dataset also top-1/top-5 (of --baseline too).")
    p.add_argument("sqz", help="a .sqz file")
    p.add_argument("--dataset", help="measure accuracy on this dataset")
    p.add_argument("--data-dir")
    p.add_argument("--split")
    p.add_argument("--baseline", help="weights to compare with (e.g. the uncompressed model)")
    p.add_argument("-o", "--out", help="also write report.md and report.json here")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_report)


def _report(args) -> int:
    from squeezelab.config import EvalConfig
    from squeezelab.errors import WeightsError
    from squeezelab.jobs.compress import build_report, format_report
    from squeezelab import runtime

    path = Path(args.sqz)
    if not path.is_file():
        raise WeightsError(f"not found: {path}")
    eval_cfg = EvalConfig(dataset=args.dataset, data_dir=args.data_dir, split=args.split) if args.dataset else None
    report = build_report(path, source=args.baseline, eval_cfg=eval_cfg)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        runtime.atomic_write_json(out / "report.json", report)
        runtime.atomic_write_text(out / "report.md", format_report(report))
    print(json.dumps(report) if args.json else format_report(report))
    return 0


def _register_sensitivity(sub) -> None:
    p = sub.add_parser("sensitivity", help="accuracy vs density of each layer pruned alone (table + PNG)",
                       description="Prune one layer at a time to each density (no retraining) and measure "
                                   "top-1: the input for choosing per-layer densities (Han et al. 2015, Fig. 6).")
    p.add_argument("--weights", required=True, help=argtypes.WEIGHTS_HELP)
    p.add_argument("--dataset", required=True)
    p.add_argument("--data-dir")
    p.add_argument("--split", help="default: the dataset's held-out split")
    p.add_argument("--densities", default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9",
                   help="comma-separated fractions of weights kept")
    p.add_argument("--layers", nargs="+", default=["*"], help="globs over layer names (fire*.expand3x3)")
    p.add_argument("--exclude", nargs="+", default=[])
    p.add_argument("--limit", type=argtypes.COUNT, help="use only this many images (a seeded subset)")
    p.add_argument("--val-fraction", type=argtypes.FRACTION, default=0.0,
                   help="with --split val: hold out this fraction of train, as the weights' run did (e.g. 0.1)")
    p.add_argument("--seed", type=argtypes.SEED, default=0, help="split seed (as the weights' run: its train.seed)")
    p.add_argument("--batch-size", type=argtypes.COUNT, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("-o", "--out", default="sensitivity", help="folder for sensitivity.json/.md/.png")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_sensitivity)


def _sensitivity(args) -> int:
    from squeezelab import runtime
    from squeezelab.errors import ConfigError
    from squeezelab.jobs.sensitivity import format_table, plot, sensitivity

    try:
        densities = [float(d) for d in args.densities.split(",") if d.strip()]
    except ValueError:
        raise ConfigError(f"--densities: expected comma-separated numbers, got {args.densities!r}") from None
    if not densities or any(not 0.0 <= d <= 1.0 for d in densities):
        raise ConfigError(f"--densities: each must be in [0, 1], got {args.densities!r}")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    result = sensitivity(args.weights, args.dataset, data_dir=args.data_dir, split=args.split, densities=densities,
                         layers=args.layers, exclude=args.exclude, limit=args.limit, batch_size=args.batch_size,
                         device=args.device, progress=not args.json, val_fraction=args.val_fraction, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runtime.atomic_write_json(out / "sensitivity.json", result)
    runtime.atomic_write_text(out / "sensitivity.md", format_table(result) + "\n")
    plot(result, out / "sensitivity.png")
    print(json.dumps(result) if args.json else format_table(result) + f"\nwritten: {out}/sensitivity.png, .json, .md")
    return 0
