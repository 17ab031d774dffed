"""The science table of results/experiments/README.md, from study folders (the same numbers as each
report's "Claim vs ours" section):

    python scripts/science_table.py studies/table3_bypass-cpu studies/fig3a_squeeze_ratio-cpu ...

One row per claim: claim | seed document | our effect (A - B, points, 95% CI) | verdict | MDE | scale
and data. Prints markdown to stdout.
"""

from __future__ import annotations

import sys
from pathlib import Path

from squeezelab.experiments import report


def rows(study_dir: Path) -> list[list[str]]:
    meta, variants = report.load_study_dir(study_dir)
    table = report.variant_rows(meta, variants)
    seeds = len(meta["seeds"]["values"])
    conv = [r["convergence"]["gain"]["mean"] for r in table]
    gain = max((g for g in conv if isinstance(g, float)), default=None)
    scale = (f"{meta['name']} `{meta['scale']}`: {len(variants)} variants x {seeds} seeds"
             + (f", last-quarter gain at most {100 * gain:+.1f} pts" if gain is not None else ""))
    out = []
    for c in report.claim_rows(meta, variants, table):
        out.append([c["claim"], c["source"], f"{c['metric']}: {report._effect(c['effect'])}", c["verdict"],
                    report._points(c["mde"]), scale])
    return out


def main(argv: list[str]) -> int:
    head = ["claim", "seed document (published A - B)", "ours: A - B, points (95% CI)", "verdict",
            "MDE (points, power 0.8)", "scale and data"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for d in argv:
        lines += ["| " + " | ".join(x.replace("|", "/") for x in r) + " |" for r in rows(Path(d))]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
