"""``squeezelab report STUDY_DIR [-o DIR]``: report.md + self-contained index.html + PNGs of a study.

    squeezelab report studies/fig3a_squeeze_ratio-cpu
"""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("report", help="report of a study folder: tables, statistics, plots (md + html)",
                              description="Write report.md, a self-contained index.html and PNGs (accuracy vs "
                                          "model size, learning curves) with per-variant mean +- 95%% CI over "
                                          "seeds, tests between variants and published numbers when given.")
    p.add_argument("study_dir", help="study folder written by squeezelab sweep")
    p.add_argument("-o", "--out", help="output folder (default: the study folder)")
    p.set_defaults(func=_report)


def _report(args) -> int:
    from squeezelab.experiments.report import write_report

    out = write_report(args.study_dir, args.out)
    print(f"{out / 'report.md'}\n{out / 'index.html'}")
    return 0
