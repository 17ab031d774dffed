"""``squeezelab runs ls|show|compare|export`` over any folder of run folders (a study folder, runs/).

    squeezelab runs ls studies/fig3a-cpu --where model.options.sr=0.5 --sort -best.top1
    squeezelab runs show studies/fig3a-cpu/runs/sr-0.5_seed-0
    squeezelab runs compare RUN_A RUN_B
    squeezelab runs export studies/fig3a-cpu --csv results.csv
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

METRICS = ("status", "epochs", "best.top1", "best.top5", "best.epoch", "final.top1", "final.val_loss")


def register(subparsers) -> None:
    runs = subparsers.add_parser("runs", help="list / show / compare / export run folders (SQLite index)",
                                 description="Query the run folders under a folder (at any depth). The folders "
                                             "are the truth; an index in the folder is updated by mtime.")
    sub = runs.add_subparsers(dest="what", required=True, parser_class=type(runs))
    p = sub.add_parser("ls", help="one line per run: the config keys that differ, and metrics")
    p.add_argument("root", nargs="?", default="runs")
    p.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                   help="filter, repeatable: model.options.sr=0.5, best.top1>0.9, status!=finished")
    p.add_argument("--sort", action="append", default=[], metavar="KEY", help="sort key (-KEY: descending)")
    p.add_argument("--columns", help="comma-separated keys to show (default: the config keys that differ)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_ls)
    p = sub.add_parser("show", help="one run: config, summary, per-epoch metrics")
    p.add_argument("run", help="run folder")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_show)
    p = sub.add_parser("compare", help="runs side by side: the config keys that differ, and metrics")
    p.add_argument("runs", nargs="+", help="run folders")
    p.set_defaults(func=_compare)
    p = sub.add_parser("export", help="every run as a CSV row (config keys and metrics)")
    p.add_argument("root", nargs="?", default="runs")
    p.add_argument("--csv", required=True, metavar="FILE", help="output file (- for stdout)")
    p.add_argument("--where", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_export)


def _ls(args) -> int:
    from squeezelab.experiments.store import column, load_runs, select, varying_keys

    records = load_runs(args.root)
    rows = select(records, args.where, args.sort)
    keys = [column(k.strip()) for k in args.columns.split(",")] if args.columns else varying_keys(records)
    cols = ["path", *keys, *[m for m in METRICS if m not in keys]]
    if args.json:
        print(json.dumps([{c: r.get(c) for c in cols} for r in rows]))
        return 0
    _table([[_fmt(c, r.get(c)) for c in cols] for r in rows], [c.removeprefix("config.") for c in cols])
    print(f"{len(rows)} of {len(records)} runs under {args.root}")
    return 0


def _read(path: str) -> dict:
    from squeezelab.errors import ConfigError
    from squeezelab.experiments.store import read_run

    run = Path(path)
    if not (run / "config.yaml").is_file():
        raise ConfigError(f"{run}: not a run folder (no config.yaml)")
    return read_run(run, str(run))


def _show(args) -> int:
    rec = _read(args.run)
    if args.json:
        print(json.dumps(rec))
        return 0
    print(f"{rec['path']}: {rec['status']}" + (f" ({rec['error']})" if rec.get("error") else ""))
    for k in METRICS[1:]:
        print(f"  {k:<14} {_fmt(k, rec.get(k))}")
    print("config:")
    for k, v in rec.items():
        if k.startswith("config."):
            print(f"  {k.removeprefix('config.')} = {json.dumps(v)}")
    rows = [[str(r.get("epoch")), _fmt("top1", r.get("top1")), _fmt("top5", r.get("top5")),
             f"{r.get('train_loss', float('nan')):.4f}", f"{r.get('val_loss', float('nan')):.4f}",
             f"{r.get('lr', 0):.3g}"] for r in rec["curve"]]
    if rows:
        print("epochs:")
        _table(rows, ["epoch", "top1", "top5", "train_loss", "val_loss", "lr"])
    return 0


def _compare(args) -> int:
    from squeezelab.experiments.store import varying_keys

    recs = [_read(p) for p in args.runs]
    keys = varying_keys(recs)
    header = ["key", *[Path(r["path"]).name for r in recs]]
    rows = [[k.removeprefix("config."), *[json.dumps(r.get(k)) for r in recs]] for k in keys]
    rows += [[m, *[_fmt(m, r.get(m)) for r in recs]] for m in METRICS]
    _table(rows, header)
    if not keys:
        print("(the configs are identical)")
    return 0


def _export(args) -> int:
    from squeezelab.experiments.store import load_runs, select

    rows = select(load_runs(args.root), args.where)
    cols = sorted({k for r in rows for k in r if k != "curve"}, key=lambda k: (k.startswith("config."), k))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([c.removeprefix("config.") for c in cols])
    for r in rows:
        w.writerow([json.dumps(r.get(c)) if isinstance(r.get(c), (list, dict)) else r.get(c) for c in cols])
    if args.csv == "-":
        sys.stdout.write(buf.getvalue())
    else:
        from squeezelab import runtime

        runtime.atomic_write_text(args.csv, buf.getvalue())
        print(f"{len(rows)} runs -> {args.csv}")
    return 0


def _fmt(col: str, v) -> str:
    if v is None:
        return "-"
    if col.endswith(("top1", "top5")) and isinstance(v, float):
        return f"{100 * v:.2f}%"
    if isinstance(v, float):
        return f"{v:.4g}"
    return v if isinstance(v, str) else json.dumps(v)


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for line in [header, *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip())
