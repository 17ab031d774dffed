"""``squeezelab report STUDY_DIR``: report.md, a self-contained index.html (PNGs embedded as base64) and
the PNGs, from the study folder's run folders (through the store) and its study.json.

A variant is one value of every searched key; its seeds are its runs. Runs that did not finish count as
failed: they are listed, and left out of the statistics (which then say n/a where too few remain).
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from squeezelab import runtime
from squeezelab.errors import ConfigError
from squeezelab.experiments import stats, verdict
from squeezelab.experiments.store import flatten, load_runs
from squeezelab.experiments.study import VARIANT


@dataclass
class Variant:
    params: dict
    runs: list[dict] = field(default_factory=list)
    measure: dict | None = None
    score: str = "best"  # "test": every finished run of the study has its kept weights' test score

    @property
    def label(self) -> str:
        def short(v):  # a sampled float in 4 digits, a value from the study as written
            return f"{v:.4g}" if isinstance(v, float) and len(str(v)) > 8 else str(v)

        return ", ".join(str(v) if k == VARIANT else f"{k.split('.')[-1]}={short(v)}"
                         for k, v in self.params.items()) or "base"

    def values(self, metric: str) -> dict[int, float | None]:
        """seed -> the run's score (None: the run did not finish): the test score of the weights a
        validation split chose when every run has one, else the per-epoch split's best."""
        return {r["seed"]: (r.get(f"{self.score}.{metric}") if r["status"] == "finished" else None)
                for r in self.runs}


def load_study_dir(study_dir: Path) -> tuple[dict, list[Variant]]:
    meta_path = study_dir / "study.json"
    if not meta_path.is_file():
        raise ConfigError(f"{study_dir}: not a study folder (no study.json; run squeezelab sweep first)")
    meta = _study_json(meta_path)
    meta["published"] = _current_published(meta)
    keys, seed_key = list(meta["space"]), meta["seeds"]["key"]
    variants: dict[str, Variant] = {}
    for rec in load_runs(study_dir):
        params = {k: _named(rec, meta.get("variants") or {}) if k == VARIANT else rec.get(f"config.{k}")
                  for k in keys}
        v = variants.setdefault(json.dumps(params, sort_keys=True), Variant(params))
        v.runs.append({**rec, "seed": rec.get(f"config.{seed_key}")})
    ordered = sorted(variants.values(), key=lambda v: [_order(meta["space"][k], v.params[k]) for k in keys])
    finished = [r for v in ordered for r in v.runs if r["status"] == "finished"]
    score = "test" if finished and all(r.get("test.top1") is not None for r in finished) else "best"
    for v in ordered:
        v.measure, v.score = _measure_run(study_dir / v.runs[0]["path"]), score
    return meta, ordered


def _study_json(path: Path) -> dict:
    """study.json as `squeezelab sweep` wrote it, or one line saying it is not."""
    problems: list[str] = []
    from squeezelab.experiments.store import _json_object

    meta = _json_object(path, problems)
    ok = (meta is not None and isinstance(meta.get("space"), dict) and isinstance(meta.get("seeds"), dict)
          and isinstance(meta["seeds"].get("key"), str) and isinstance(meta.get("name"), str))
    if not ok:
        why = "; ".join(problems) or "it lacks the name, space or seeds a sweep writes"
        raise ConfigError(f"{path}: not a study folder's study.json ({why})")
    return meta


def _current_published(meta: dict) -> dict | None:
    """The published numbers and claims as the study file states them now (they are not part of what
    runs, so a correction in the file reaches the report without sweeping again); study.json's copy
    when the file is gone or no longer reads."""
    from squeezelab.experiments.study import _published, _read_study

    path = Path(meta.get("study_file") or "")
    try:
        return _published(_read_study(path).get("published")) if path.is_file() else meta.get("published")
    except ConfigError:
        return meta.get("published")


def _named(rec: dict, named: dict[str, dict]) -> str | None:
    """The named variant a run is: the one whose overrides its config holds, the most specific first
    (a baseline with no overrides matches every run). Read from the run's config: folders are the truth."""
    flat = {name: flatten(over) for name, over in named.items()}  # model.options: {...} -> its leaf keys
    hits = [(len(over), name) for name, over in flat.items()
            if all(_same(rec.get(f"config.{k}"), v) for k, v in over.items())]
    return max(hits)[1] if hits else None


def _order(domain, value):
    if isinstance(domain, list) and value in domain:
        return (0, domain.index(value), "")
    return (1, value if isinstance(value, (int, float)) else 0, str(value))


def _measure_run(run: Path) -> dict:
    from squeezelab.config import load_config
    from squeezelab.experiments.measure import measure

    return measure(load_config(run / "config.yaml"))


# ------------------------------------------------------------------------------------------ numbers


def variant_rows(meta: dict, variants: list[Variant]) -> list[dict]:
    rows = []
    for v in variants:
        failed = [r["path"] for r in v.runs if r["status"] != "finished"]
        row = {"variant": v.label, "params": v.measure["params"], "size_mb": v.measure["size_mb"],
               "mflops": v.measure["flops"] / 1e6, "seeds": len(v.runs), "failed": failed,
               "top1": stats.describe(v.values("top1").values()), "top5": stats.describe(v.values("top5").values()),
               "published": _published(meta.get("published"), v),
               "convergence": verdict.convergence([[e["top1"] for e in r["curve"]] for r in v.runs
                                                   if r["status"] == "finished" and r["curve"]])}
        rows.append(row)
    return rows


def _published(pub: dict | None, v: Variant) -> dict | None:
    if not pub:
        return None
    for row in pub.get("rows") or []:
        if _matches(v, row["match"]):
            return {k: row.get(k) for k in ("top1", "top5", "size_mb", "note")}
    return None


def _matches(v: Variant, match: dict) -> bool:
    """Whether a variant is the one ``match`` names: by config keys, or by name ({variant: SN_lr1})."""
    rec = {**v.runs[0], **({f"config.{VARIANT}": v.params[VARIANT]} if VARIANT in v.params else {})}
    return all(_same(rec.get(f"config.{k}"), want) for k, want in match.items())


def claim_rows(meta: dict, variants: list[Variant], rows: list[dict]) -> list[dict]:
    """Each claim of the study file against our runs: A - B with its 95% interval, the minimal effect
    detectable at this number of seeds and spread (power 0.8), and the verdict."""
    out = []
    by_label = {r["variant"]: r for r in rows}
    for c in (meta.get("published") or {}).get("claims") or []:
        a = [v for v in variants if _matches(v, c["a"])]
        b = [v for v in variants if _matches(v, c["b"])]
        metric = c.get("metric") or meta.get("metric", "top1")
        row = {"claim": c["claim"] + (f" ({c['note']})" if c.get("note") else ""), "source": c.get("source", ""), "metric": metric, "published": c.get("published"),
               "kind": c["kind"]}
        if len(a) != 1 or len(b) != 1:
            out.append({**row, "a": str(c["a"]), "b": str(c["b"]), "effect": None, "mde": stats.NA("no such variant"),
                        "verdict": f"not run at this scale ({len(a)} and {len(b)} variants match A and B)"})
            continue
        eff = stats.effect(a[0].values(metric), b[0].values(metric))
        n = eff["n"] if isinstance(eff["n"], int) else min(eff["n"])
        mde = stats.mde(n, eff["sd"], paired=eff["test"] == "paired t")
        text = verdict.verdict(c["kind"], c.get("published"), eff)
        conv = {v.label: by_label[v.label]["convergence"]["converged"] for v in (a[0], b[0])}
        if any(ok is False for ok in conv.values()):
            text += f" (not converged: {', '.join(k for k, ok in conv.items() if ok is False)})"
        elif any(ok is not True for ok in conv.values()):
            text += " (convergence not measured: runs too short for a curve)"
        out.append({**row, "a": a[0].label, "b": b[0].label, "effect": eff, "mde": mde, "verdict": text})
    # a study tests several claims on the same runs: Holm over them, beside each claim's own p
    for row, adj in zip(out, stats.holm([r["effect"]["p"] if r["effect"] else stats.NA("not run") for r in out])):
        row["p_holm"] = adj
    return out


def _same(a, b) -> bool:
    return a == b or str(a) == str(b)


def comparisons(variants: list[Variant], metric: str) -> list[dict]:
    """Every pair of variants (a family): the tests of stats.compare, Holm-corrected p."""
    pairs = [(a, b) for i, a in enumerate(variants) for b in variants[i + 1:]]
    rows = [{"a": b.label, "b": a.label, **stats.compare(b.values(metric), a.values(metric))} for a, b in pairs]
    for row, adj in zip(rows, stats.holm([r["p"] for r in rows])):
        row["p_holm"] = adj
    return rows


def correlations(meta: dict, variants: list[Variant], metric: str) -> list[dict]:
    """Pearson r of the metric with each numeric searched key and with the model size, over runs."""
    runs = [(v, r) for v in variants for r in v.runs if r["status"] == "finished"]
    ys = [r.get(f"{v.score}.{metric}") for v, r in runs]
    out = [{"x": "size (MB)", **stats.pearson([v.measure["size_mb"] for v, _ in runs], ys)}]
    for k in meta["space"]:
        xs = [r.get(f"config.{k}") for _, r in runs]
        if all(stats._num(x) for x in xs):
            out.append({"x": k, **stats.pearson(xs, ys)})
    return out


# ------------------------------------------------------------------------------------------ figures


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def figure_size(rows: list[dict], title: str, score: str = "best", published: dict | None = None) -> bytes:
    """Accuracy vs model size (paper Fig. 3 style): one point per variant, 95% CI bars over seeds; the
    published points (another dataset) on their own right-hand axis, at their published size where the
    study file gives one, else at ours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for metric, marker in (("top1", "o"), ("top5", "s")):
        pts = sorted(((r["size_mb"], r[metric]) for r in rows if not isinstance(r[metric]["mean"], stats.NA)),
                     key=lambda p: p[0])  # a line from the smallest model to the largest
        xs = [x for x, _ in pts]
        ys = [100 * d["mean"] for _, d in pts]
        err = [[100 * (d["mean"] - d["ci95"][0]) if isinstance(d["ci95"], tuple) else 0 for _, d in pts],
               [100 * (d["ci95"][1] - d["mean"]) if isinstance(d["ci95"], tuple) else 0 for _, d in pts]]
        ax.errorbar(xs, ys, yerr=err, marker=marker, capsize=4, linestyle="-", label=f"{'test' if score == 'test' else 'val'} {metric} (mean, 95% CI)")
    for r in rows:
        if not isinstance(r["top1"]["mean"], stats.NA):
            ax.annotate(_plain(r["variant"]), (r["size_mb"], 100 * r["top1"]["mean"]), textcoords="offset points",
                        xytext=(4, -12), fontsize=7)
    ax.set_ylim(0, 100)  # a t interval over 2-3 seeds can reach past 0 or 100: show the possible range
    pub = [(r, r["published"]) for r in rows if r["published"]]
    sizes = [r["size_mb"] for r in rows if r["size_mb"] > 0]
    sizes += [p["size_mb"] for _, p in pub if p.get("size_mb")]
    if pub:
        right = ax.twinx()
        for metric, marker in (("top1", "o"), ("top5", "s")):
            pts = sorted(((p.get("size_mb") or r["size_mb"], p[metric]) for r, p in pub if p.get(metric) is not None))
            if pts:
                right.plot([x for x, _ in pts], [y for _, y in pts], marker=marker, linestyle=":", color="grey",
                           markerfacecolor="none", label=f"published {metric} ({(published or {}).get('dataset', '?')})")
        right.set_ylim(0, 100)
        right.set_ylabel(f"published accuracy (%), {(published or {}).get('dataset', 'their data')}")
        right.legend(fontsize=7, loc="lower right")
    log = bool(sizes) and max(sizes) > 10 * min(sizes)  # SqueezeNet beside AlexNet: 3 MB vs 94 MB
    if log:
        ax.set_xscale("log")
    return _finish(fig, ax, f"model size (MB, fp32{', log scale' if log else ''})", "accuracy (%)", title,
                   legend_size=8)


def _plain(text: str) -> str:
    """Text matplotlib draws as it is: a '$' would start mathtext ($\\frac{ from a name breaks the plot)."""
    return str(text).replace("$", r"\$")


def _finish(fig, ax, xlabel: str, ylabel: str, title: str, legend_size: int) -> bytes:
    """Label, grid and legend a figure, and return it as PNG bytes."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(_plain(title), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size)
    data = _png(fig)
    plt.close(fig)
    return data


def figure_curves(variants: list[Variant], title: str) -> bytes:
    """Validation top-1 per epoch: the mean over seeds, a band from the lowest to the highest seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for v in variants:
        curves = [[row["top1"] for row in r["curve"]] for r in v.runs if r["curve"]]
        if not curves:
            continue
        length = min(len(c) for c in curves)
        epochs = list(range(1, length + 1))
        cols = [[100 * c[i] for c in curves] for i in range(length)]
        mean = [sum(c) / len(c) for c in cols]
        line, = ax.plot(epochs, mean, marker=".", label=_plain(f"{v.label} ({len(curves)} seeds)"))
        ax.fill_between(epochs, [min(c) for c in cols], [max(c) for c in cols], alpha=0.2, color=line.get_color())
    ax.xaxis.get_major_locator().set_params(integer=True)
    return _finish(fig, ax, "epoch", "per-epoch top-1 (%)", title, legend_size=7)


# ------------------------------------------------------------------------------------------ writing


def _pm(d: dict) -> str:
    if isinstance(d["mean"], stats.NA):
        return str(d["mean"])
    if isinstance(d["ci95"], stats.NA):
        return f"{100 * d['mean']:.2f} (CI {d['ci95']})"
    return f"{100 * d['mean']:.2f} ± {100 * (d['ci95'][1] - d['mean']):.2f}"


def tables(meta: dict, rows: list[dict], comps: list[dict], corr: list[dict],
           score: str = "best", claims: list[dict] | None = None) -> dict[str, tuple[list, list]]:
    """name -> (header, rows of text): the same tables go into report.md and index.html."""
    pub = meta.get("published")
    split = "test" if score == "test" else "val"
    head = ["variant", "params", "MB fp32", "MFLOPs", "seeds", f"{split} top-1 % (mean ± 95% CI)", f"{split} top-5 %",
            "last-25% gain (points)", "converged"]
    # the published model's size only where the study file gives one (the paper's Fig. 3 points)
    pub_mb = bool(pub) and any((r["published"] or {}).get("size_mb") is not None for r in rows)
    if pub:
        head += [f"published top-1 ({pub.get('dataset', '?')})", "published top-5"] + (["published MB"] if pub_mb else [])
    var = []
    for r in rows:
        line = [r["variant"], f"{r['params']:,}", f"{r['size_mb']:.3f}", f"{r['mflops']:.1f}",
                f"{r['seeds'] - len(r['failed'])}/{r['seeds']}", _pm(r["top1"]), _pm(r["top5"]),
                _gain(r["convergence"]), _converged(r["convergence"])]
        if pub:
            p = r["published"] or {}
            line += [_maybe(p.get("top1")), _maybe(p.get("top5"))] + ([_maybe(p.get("size_mb"))] if pub_mb else [])
        var.append(line)
    comp_head = ["A", "B", "test", "n", "A - B (points)", "t", "p", "p (Holm)", "Cohen's d", "Wilcoxon p"]
    comp = [[c["a"], c["b"], c["test"], str(c["n"]), _diff(c["mean_diff"]), stats.fmt(c["t"]), stats.fmt(c["p"]),
             stats.fmt(c["p_holm"]), stats.fmt(c["d"]), stats.fmt(c["wilcoxon_p"])] for c in comps]
    cor = [[c["x"], str(c["n"]), stats.fmt(c["r"]), stats.fmt(c["p"])] for c in corr]
    claim_head = ["claim", "seed document", "A", "B", "metric", "published A - B (points)", "ours A - B (95% CI)",
                  "p", "p (Holm over the claims)", "MDE (power 0.8)", "verdict"]
    cl = [[c["claim"], c["source"], c["a"], c["b"], c["metric"], _maybe(c["published"]), _effect(c["effect"]),
           stats.fmt(c["effect"]["p"]) if c["effect"] else "-", stats.fmt(c["p_holm"]) if c["effect"] else "-",
           _points(c["mde"]), c["verdict"]] for c in claims or []]
    return {"claims": (claim_head, cl), "variants": (head, var), "comparisons": (comp_head, comp),
            "correlations": (["x", "runs", "Pearson r", "p"], cor)}


def _gain(conv: dict) -> str:
    d = conv["gain"]
    return str(d["mean"]) if isinstance(d["mean"], stats.NA) else f"{100 * d['mean']:+.2f}"


def _converged(conv: dict) -> str:
    ok = conv["converged"]
    if isinstance(ok, stats.NA):
        return str(ok)
    return f"{'yes' if ok else 'NO'} ({conv['converged_runs']}/{conv['runs']} runs < 1 point)"


def _effect(eff: dict | None) -> str:
    if eff is None:
        return "-"
    if not isinstance(eff["ci95"], tuple):
        return f"{_diff(eff['mean'])} ({eff['ci95']})"
    lo, hi = eff["ci95"]
    return f"{100 * eff['mean']:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]"


def _points(v) -> str:
    return str(v) if isinstance(v, stats.NA) else f"{100 * v:.2f}"


def _maybe(v) -> str:
    return "-" if v is None else f"{v}"


def _diff(v) -> str:
    return str(v) if isinstance(v, stats.NA) else f"{100 * v:+.2f}"


def _md_table(head: list, rows: list) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    # names come from files (study names, class names, variant values): escaped, so that markdown
    # viewers show them as text instead of running their HTML
    lines += ["| " + " | ".join(_md_safe(x).replace("|", "/") for x in r) + " |" for r in rows]
    return "\n".join(lines)


def _md_safe(text) -> str:
    """Text for report.md: a '<' that would open an HTML tag (or comment) is escaped, so that a name
    carrying markup shows as text in markdown viewers; '< 1 point' stays as it is."""
    return re.sub(r"<(?=[A-Za-z/!?])", "&lt;", str(text))


def _html_table(head: list, rows: list) -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{trs}</table>"


def _notes(meta: dict, rows: list[dict], metric: str, study_dir: Path, score: str = "best") -> list[str]:
    what = (f"test {metric} of the weights each run kept, chosen on its validation split" if score == "test" else
            f"{metric} of each run's best epoch on its per-epoch split (with no validation split that is the "
            f"test split: optimistic)")
    notes = [f"Study {meta['name']} at scale {meta['scale']}: {meta['sampler']} over "
             f"{', '.join(meta['space']) or 'nothing'}; seeds {meta['seeds']['values']} ({meta['seeds']['key']}); "
             f"metric: {what}."]
    pub = meta.get("published")
    if pub:
        ours = _dataset(meta)
        notes.append(f"Published numbers: {pub.get('source', 'see the study file')}, on {pub.get('dataset', '?')}."
                     + (f" Ours are on {ours}: a different dataset, so compare trends, not absolute values."
                        if pub.get("dataset") != ours else "")
                     + (f" {pub['metric_note']}" if pub.get("metric_note") else ""))
    pruned = [json.loads(p.read_text()) for p in sorted((study_dir / "pruned").glob("*.json"))]
    if pruned:
        notes.append("Pruned before training by the study's constraints: "
                     + "; ".join(f"{p['trial']} ({p['reason']})" for p in pruned) + ".")
    unconverged = [r["variant"] for r in rows if r["convergence"]["converged"] is False]
    if unconverged:
        notes.append(f"NOT CONVERGED (validation top-1 still gained a point or more over the last 25% of the epochs, "
                     f"mean over seeds): {', '.join(unconverged)}. Conclusions about these variants are about an "
                     f"unfinished training, and their claims are marked so.")
    elif rows and all(r["convergence"]["converged"] is True for r in rows):
        notes.append("Every variant converged: validation top-1 gained under 1 point over the last 25% of the "
                     "epochs (mean over seeds).")
    notes += _timing(study_dir)
    failed = [p for r in rows for p in r["failed"]]
    if failed:
        notes.append(f"Runs that did not finish (left out of the statistics): {', '.join(failed)}.")
    return notes


def _timing(study_dir: Path) -> list[str]:
    """The study's real wall time (sweeps.jsonl: one line per `sweep` invocation) beside the
    `sweep --dry-run -o` estimate (estimate.json), where the folder has them."""
    walls = []
    for line in _read_lines(study_dir / "sweeps.jsonl"):
        try:
            rec = json.loads(line)
            walls.append((float(rec["wall_s"]), int(rec.get("workers", 1))))
        except (ValueError, TypeError, KeyError):
            continue
    if not walls:
        return []
    text = (f"Wall time: {sum(w for w, _ in walls) / 60:.1f} min over {len(walls)} sweep invocation(s) with "
            f"{', '.join(sorted({str(n) for _, n in walls}))} worker(s)")
    try:
        est = json.loads((study_dir / "estimate.json").read_text())
        text += f"; `sweep --dry-run` estimated {float(est['seconds']) / 60:.1f} min with {est['workers']} worker(s)"
    except (OSError, ValueError, TypeError, KeyError):
        pass
    return [text + "."]


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines() if path.is_file() else []
    except OSError:
        return []


def _dataset(meta: dict) -> str:
    from squeezelab.config import load_config

    return load_config(meta["base"], meta.get("set") or {}).data.dataset


def write_report(study_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write report.md, index.html and the PNGs into ``out`` (default: the study folder); returns out."""
    study_dir = Path(study_dir)
    meta, variants = load_study_dir(study_dir)
    if not variants:
        raise ConfigError(f"{study_dir}: no run folders yet (run squeezelab sweep first)")
    out = Path(out or study_dir)
    out.mkdir(parents=True, exist_ok=True)
    metric = meta.get("metric", "top1")
    rows = variant_rows(meta, variants)
    tabs = tables(meta, rows, comparisons(variants, metric), correlations(meta, variants, metric), variants[0].score,
                  claim_rows(meta, variants, rows))
    title = f"{meta['name']} ({meta['scale']})"
    pngs = {"accuracy_vs_size.png": figure_size(rows, title, variants[0].score, meta.get("published")),
            "learning_curves.png": figure_curves(variants, title)}
    for name, data in pngs.items():
        runtime.atomic_write_bytes(out / name, data)
    notes = _notes(meta, rows, metric, study_dir, variants[0].score)
    runtime.atomic_write_text(out / "report.md", _markdown(title, notes, tabs, pngs))
    runtime.atomic_write_text(out / "index.html", _html(title, notes, tabs, pngs))
    return out


SECTIONS = (("claims", "Claim vs ours (A - B in points; 95% interval of the paired differences over seeds; MDE: "
                       "the smallest true difference these seeds would detect 80% of the time)"),
            ("variants", "Variants (mean over seeds, 95% t interval; converged: validation top-1 gained under 1 point "
                         "over the last 25% of the epochs, mean over seeds)"),
            ("comparisons", "Between variants (paired t when the same seeds ran both, Welch otherwise; "
                            "Holm over all pairs)"),
            ("correlations", "Correlation with the metric (Pearson, over finished runs)"))


def _markdown(title, notes, tabs, pngs) -> str:
    parts = [f"# {_md_safe(title)}", "", *map(_md_safe, notes), ""]
    parts += [f"![{n}]({n})" for n in pngs] + [""]
    for key, heading in SECTIONS:
        if tabs[key][1]:
            parts += [f"## {heading}", "", _md_table(*tabs[key]), ""]
    return "\n".join(parts)


def _html(title, notes, tabs, pngs) -> str:
    style = ("body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #bbb;padding:3px 8px;font-size:13px}th{background:#eee}img{max-width:48%}")
    imgs = "".join(f'<img alt="{n}" src="data:image/png;base64,{base64.b64encode(d).decode()}">'
                   for n, d in pngs.items())
    body = [f"<h1>{html.escape(title)}</h1>", *[f"<p>{html.escape(n)}</p>" for n in notes], f"<div>{imgs}</div>"]
    for key, heading in SECTIONS:
        if tabs[key][1]:
            body += [f"<h2>{html.escape(heading)}</h2>", _html_table(*tabs[key])]
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
