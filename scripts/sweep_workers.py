"""How many sweep workers (and threads each) finish a study fastest on this machine, side by side.

    python scripts/sweep_workers.py STUDY.yaml [--scale cpu] [--settings 1x2,2x1,2x2] [--rounds 1]
                                    [--set KEY=VALUE ...] [-o DIR]

A setting is WORKERS or WORKERSxTHREADS (threads -> --set train.threads=T; leave it out on a GPU, where
N workers share the device: ``--settings 1,2,4,8``). Each round runs the whole study once per setting,
in the order given, each into a fresh study folder under DIR; prints the wall-clock seconds, runs per hour
and the mean selected score per setting (which should not depend on the setting), and the JSON of every
measurement on the last line. Take it on an otherwise idle machine: other jobs make it meaningless."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _setting(text: str) -> tuple[int, int | None]:
    workers, _, threads = text.partition("x")
    return int(workers), (int(threads) if threads else None)


def _sweep(study: str, scale: str, workers: int, threads: int | None, sets: list[str], out: Path) -> float:
    cmd = [sys.executable, "-m", "squeezelab", "sweep", study, "--scale", scale, "--workers", str(workers), "-o", str(out)]
    for kv in sets + ([f"train.threads={threads}"] if threads else []):
        cmd += ["--set", kv]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def _scores(out: Path) -> list[float]:
    """Each finished run's kept score: the selection's test score where validation chose, else best."""
    scores = []
    for summary in sorted(out.glob("runs/*/summary.json")):
        s = json.loads(summary.read_text())
        test = (s.get("selection") or {}).get("test") or {}
        scores.append(test.get("top1", (s.get("best") or {}).get("value")))
    return [x for x in scores if x is not None]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study")
    p.add_argument("--scale", default="cpu")
    p.add_argument("--settings", default="1x2,2x1,2x2", help="comma-separated WORKERS[xTHREADS]")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed on to every sweep")
    p.add_argument("-o", "--out", default=None, help="where the study folders go (default: a temp folder, removed)")
    args = p.parse_args()
    settings = [_setting(s) for s in args.settings.split(",")]
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="sweep-workers-"))
    rows = []
    for r in range(args.rounds):
        for workers, threads in settings:
            name = f"r{r}-{workers}x{threads or 'auto'}"
            wall = _sweep(args.study, args.scale, workers, threads, args.set, root / name)
            scores = _scores(root / name)
            rows.append({"round": r, "workers": workers, "threads": threads, "wall_s": round(wall, 1),
                         "runs": len(scores), "runs_per_hour": round(3600 * len(scores) / wall, 1),
                         "mean_top1": round(sum(scores) / len(scores), 4) if scores else None})
            print(f"round {r}  workers {workers}  threads {threads or 'auto':>4}  {wall:7.1f} s  "
                  f"{rows[-1]['runs_per_hour']:6.1f} runs/h  mean top-1 {rows[-1]['mean_top1']}", flush=True)
    if not args.out:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
