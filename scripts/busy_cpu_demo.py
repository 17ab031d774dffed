"""`squeezelab demo` on the quiet machine and with two busy loops on the cores, side by side in one run
(issue: a shared CPU must slow squeezelab down gracefully, not 5-55x).

    python scripts/busy_cpu_demo.py [--rounds 1] [--busy 2] [-- extra demo args]

Each round runs the demo quiet, then with ``--busy`` processes spinning (pure-Python loops, as another
user's job would), in fresh temp folders; prints wall-clock seconds and the loaded/quiet ratio, and the
JSON of every measurement on the last line. Take it on an otherwise idle machine."""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _spin() -> None:
    while True:
        pass


def _demo(extra: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "squeezelab", "demo", "--runs-dir", str(Path(tmp) / "runs"), *extra],
                       check=True, stdout=subprocess.DEVNULL, cwd=tmp)
        return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--busy", type=int, default=2, help="busy loops while loaded (default 2: one per core here)")
    p.add_argument("extra", nargs="*", help="arguments for squeezelab demo (after --)")
    args = p.parse_args()
    results = []
    for r in range(args.rounds):
        quiet = _demo(args.extra)
        spinners = [mp.Process(target=_spin, daemon=True) for _ in range(args.busy)]
        for s in spinners:
            s.start()
        time.sleep(2)  # let the load average see them (runtime.choose_threads reads idle cores)
        try:
            loaded = _demo(args.extra)
        finally:
            for s in spinners:
                s.terminate()
        results.append({"round": r + 1, "quiet_s": round(quiet, 1), "loaded_s": round(loaded, 1),
                        "ratio": round(loaded / quiet, 2)})
        print(f"round {r + 1}: quiet {quiet:.1f} s, {args.busy} busy loops {loaded:.1f} s: {loaded / quiet:.2f}x",
              flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
