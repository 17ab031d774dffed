#!/usr/bin/env python3
"""DSD (Dense-Sparse-Dense, Han et al. 2017; paper section 7) against plain training of the same epochs.

    python scripts/dsd_study.py RECIPE.yaml --seeds 0 1 2 [--set data.data_dir=...] [-o DIR]

For every seed: the recipe as it is ("plain"), and the recipe with DSD's schedule ("dsd"): dense for
the first third, pruned to ``--density`` and trained sparse for the second third, then the masks are
dropped and it trains dense again for the last third (at ``--release-lr-factor`` x the schedule's lr).
Both report the test top-1 of their LAST epoch (nothing is selected on the test set; the recipe's
held-out validation top-1 is kept beside it). Then mean,
standard deviation and 95% t-interval per variant, and the paired t-test over seeds (scipy.stats).
Each run is an ordinary run folder under DIR; rerunning skips finished runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def run_one(recipe: str, sets: list[str], run_dir: Path) -> dict:
    from squeezelab import runtime
    from squeezelab.config import load_config
    from squeezelab.engine import fit

    if runtime.run_status(run_dir) != "finished":
        resume = run_dir if (run_dir / "last.safetensors").is_file() else None
        cfg = load_config(run_dir / "config.yaml" if resume else recipe, [] if resume else
                          [*sets, f"output.run_dir={run_dir}"])
        fit(cfg, resume=resume, progress=False)
    from squeezelab.engine.evaluation import evaluate_weights

    summary = json.loads((run_dir / "summary.json").read_text())
    cfg = load_config(run_dir / "config.yaml")
    test = evaluate_weights(str(run_dir / "last.safetensors"), cfg.data.dataset, data_dir=cfg.data.data_dir,
                            split="test")  # the last epoch's weights: nothing is selected on the test set
    return {"val_top1": summary["final"]["top1"], "top1": test["top1"], "top5": test["top5"], "run": str(run_dir)}


def stats(values: list[float]) -> dict:
    import numpy as np
    from scipy import stats as st

    a = np.asarray(values, float)
    sd = float(a.std(ddof=1)) if a.size > 1 else float("nan")
    half = float(st.t.ppf(0.975, a.size - 1) * sd / np.sqrt(a.size)) if a.size > 1 else float("nan")
    return {"mean": float(a.mean()), "std": sd, "ci95": [float(a.mean()) - half, float(a.mean()) + half],
            "min": float(a.min()), "max": float(a.max()), "n": int(a.size)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("recipe")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--density", type=float, default=0.5)
    p.add_argument("--release-lr-factor", type=float, default=1.0)
    p.add_argument("--set", action="append", default=[])
    p.add_argument("-o", "--out", default="runs/dsd")
    args = p.parse_args()
    from scipy import stats as st

    from squeezelab.config import load_config

    epochs = load_config(args.recipe, args.set).train.epochs
    third = epochs / 3
    dsd = [f"prune.density={args.density}", f"prune.start_epoch={third}", f"prune.release_epoch={2 * third}",
           f"prune.release_lr_factor={args.release_lr_factor}"]
    out = Path(args.out)
    rows = []
    for seed in args.seeds:
        common = [*args.set, f"train.seed={seed}"]
        plain = run_one(args.recipe, common, out / f"plain-seed{seed}")
        sparse = run_one(args.recipe, common + dsd, out / f"dsd-seed{seed}")
        rows.append({"seed": seed, "plain": plain, "dsd": sparse})
        print(f"seed {seed}: test top-1 plain {100 * plain['top1']:.2f}%  dsd {100 * sparse['top1']:.2f}%", flush=True)
    plain_top1 = [r["plain"]["top1"] for r in rows]
    dsd_top1 = [r["dsd"]["top1"] for r in rows]
    test = st.ttest_rel(dsd_top1, plain_top1) if len(rows) > 1 else None
    result = {"recipe": args.recipe, "sets": args.set, "epochs": epochs, "dsd": dsd, "rows": rows,
              "plain": stats(plain_top1), "dsd_stats": stats(dsd_top1),
              "paired_t": None if test is None else {"t": float(test.statistic), "p": float(test.pvalue),
                                                    "mean_diff": float(sum(dsd_top1) / len(rows) - sum(plain_top1) / len(rows))}}
    (out / "dsd_study.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("plain", "dsd_stats", "paired_t")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
