"""Statistics over seeds with scipy.stats, for reports: per variant mean, std and a 95% t interval;
between two variants a paired t-test when the same seeds ran both (the seed fixes data order and
init, so pairs share noise), Welch's t-test otherwise, the Wilcoxon signed-rank (paired) or rank-sum
(Mann-Whitney U, unpaired) test, Cohen's d; Pearson r between a numeric key and the metric; Holm's
correction over a family of p-values.

Nothing here returns NaN or raises on degenerate input: a value that cannot be computed (one seed,
identical values, a failed run) is an ``NA`` carrying the reason, printed as ``n/a (reason)``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass


@dataclass(frozen=True)
class NA:
    reason: str

    def __str__(self) -> str:
        return f"n/a ({self.reason})"


def _finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def _constant(xs) -> bool:
    """All equal up to float rounding (0.6 - 0.3 and 0.5 - 0.2 differ in the 17th digit): such data has
    no variance to test, and scipy would divide by a rounding error."""
    xs = list(xs)
    return max(xs) - min(xs) <= 1e-12 * max(1.0, max(abs(x) for x in xs))


def describe(values) -> dict:
    """{"n", "mean", "std", "ci95": (lo, hi)} over the finite values (None: a failed run, left out)."""
    from scipy import stats

    xs = _finite(values)
    n = len(xs)
    if n == 0:
        return {"n": 0, "mean": NA("no finished run"), "std": NA("no finished run"), "ci95": NA("no finished run")}
    mean = sum(xs) / n
    if n == 1:
        return {"n": 1, "mean": mean, "std": NA("one seed"), "ci95": NA("one seed")}
    std = 0.0 if _constant(xs) else float(stats.tstd(xs))  # sample std (ddof 1)
    half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci95": (mean - half, mean + half)}


def compare(a: dict[int, float | None], b: dict[int, float | None]) -> dict:
    """Two variants' values keyed by seed. Paired when both ran the same seeds (at least 2), else Welch.
    Returns {"test", "n", "mean_diff", "t", "p", "d", "wilcoxon_p"} (a minus b)."""
    a, b = _clean(a), _clean(b)
    if len(a) < 2 or len(b) < 2:
        why = NA(f"needs 2 finished seeds in each variant (have {len(a)} and {len(b)})")
        return {"test": "-", "n": (len(a), len(b)), "mean_diff": _mean_diff(a, b), "t": why, "p": why, "d": why,
                "wilcoxon_p": why}
    if set(a) == set(b):
        return _paired([a[s] for s in sorted(a)], [b[s] for s in sorted(a)])
    return _welch(list(a.values()), list(b.values()))


def _clean(d: dict) -> dict[int, float]:
    return {s: float(v) for s, v in d.items() if v is not None and math.isfinite(float(v))}


def _mean_diff(a: dict, b: dict):
    if not a or not b:
        return NA("no finished run")
    return sum(a.values()) / len(a) - sum(b.values()) / len(b)


def _paired(xa: list[float], xb: list[float]) -> dict:
    from scipy import stats

    diff = [x - y for x, y in zip(xa, xb)]
    out = {"test": "paired t", "n": len(diff), "mean_diff": sum(diff) / len(diff)}
    if _constant(diff):  # no variance in the differences: t is undefined (or infinite)
        zero = _constant([*diff, 0.0])
        why = NA("identical values" if zero else "differences are all equal (no variance)")
        return {**out, "t": why, "p": why, "d": why, "wilcoxon_p": why if zero else _wilcoxon(diff)}
    r = stats.ttest_rel(xa, xb)
    d = out["mean_diff"] / float(stats.tstd(diff))  # Cohen's d_z: mean difference / sd of differences
    return {**out, "t": float(r.statistic), "p": float(r.pvalue), "d": d, "wilcoxon_p": _wilcoxon(diff)}


def _wilcoxon(diff: list[float]):
    from scipy import stats

    if _constant([*diff, 0.0]):
        return NA("identical values")
    with warnings.catch_warnings():  # scipy warns that small samples use the exact distribution
        warnings.simplefilter("ignore")
        return float(stats.wilcoxon(diff).pvalue)


def _welch(xa: list[float], xb: list[float]) -> dict:
    from scipy import stats

    out = {"test": "Welch t", "n": (len(xa), len(xb)), "mean_diff": sum(xa) / len(xa) - sum(xb) / len(xb)}
    if _constant(xa) and _constant(xb):
        why = NA("identical values" if _constant(xa + xb) else "no variance within either variant")
        return {**out, "t": why, "p": why, "d": why, "wilcoxon_p": _ranksum(xa, xb)}
    r = stats.ttest_ind(xa, xb, equal_var=False)
    na, nb = len(xa), len(xb)
    pooled = math.sqrt(((na - 1) * _tvar(xa) + (nb - 1) * _tvar(xb)) / (na + nb - 2))  # > 0: one varies
    return {**out, "t": float(r.statistic), "p": float(r.pvalue), "d": out["mean_diff"] / pooled,
            "wilcoxon_p": _ranksum(xa, xb)}


def _tvar(xs):
    from scipy import stats

    return 0.0 if _constant(xs) else float(stats.tvar(xs))


def _ranksum(xa: list[float], xb: list[float]):
    from scipy import stats

    if _constant(xa + xb):
        return NA("identical values")
    return float(stats.mannwhitneyu(xa, xb, alternative="two-sided").pvalue)


def pearson(x, y) -> dict:
    """{"n", "r", "p"} over the pairs where both are finite numbers."""
    from scipy import stats

    pairs = [(float(a), float(b)) for a, b in zip(x, y) if _num(a) and _num(b)]
    if len(pairs) < 3:
        why = NA(f"needs 3 points (have {len(pairs)})")
        return {"n": len(pairs), "r": why, "p": why}
    xs, ys = zip(*pairs)
    if _constant(xs) or _constant(ys):
        why = NA("identical values")
        return {"n": len(pairs), "r": why, "p": why}
    r = stats.pearsonr(xs, ys)
    return {"n": len(pairs), "r": float(r.statistic), "p": float(r.pvalue)}


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def holm(pvalues: list) -> list:
    """Holm-Bonferroni adjusted p-values in the input order; NA entries stay NA and do not count."""
    real = sorted((p, i) for i, p in enumerate(pvalues) if isinstance(p, float))
    m, out, running = len(real), list(pvalues), 0.0
    for rank, (p, i) in enumerate(real):
        running = max(running, min(1.0, (m - rank) * p))  # adjusted p-values never decrease
        out[i] = running
    return out


def fmt(v, digits: int = 3, pct: bool = False) -> str:
    """A number or NA as text."""
    if isinstance(v, NA):
        return str(v)
    if isinstance(v, tuple):
        return f"[{fmt(v[0], digits, pct)}, {fmt(v[1], digits, pct)}]"
    return f"{100 * v:.{max(digits - 1, 1)}f}%" if pct else f"{v:.{digits}g}"


def effect(a: dict[int, float | None], b: dict[int, float | None]) -> dict:
    """A - B with its 95% interval beside ``compare``'s test and p: the paired t interval of the per-seed
    differences when both ran the same seeds (at least 2), else Welch's. {"test", "n", "mean", "ci95",
    "p", "sd"}; sd is the spread the minimal detectable effect is computed from (of the differences, or
    the pooled one)."""
    from scipy import stats

    c = compare(a, b)
    a, b = _clean(a), _clean(b)
    out = {"test": c["test"], "n": c["n"], "mean": c["mean_diff"], "p": c["p"]}
    if c["test"] == "-":
        return {**out, "ci95": c["p"], "sd": c["p"]}
    if c["test"] == "paired t":
        diff = [a[s] - b[s] for s in sorted(a)]
        n = len(diff)
        sd = 0.0 if _constant(diff) else float(stats.tstd(diff))
        half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
        return {**out, "ci95": (out["mean"] - half, out["mean"] + half), "sd": sd}
    xa, xb = list(a.values()), list(b.values())
    va, vb, na, nb = _tvar(xa), _tvar(xb), len(xa), len(xb)
    se = math.sqrt(va / na + vb / nb)
    if se == 0:
        return {**out, "ci95": (out["mean"], out["mean"]), "sd": 0.0}
    df = (va / na + vb / nb) ** 2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    half = float(stats.t.ppf(0.975, df)) * se
    return {**out, "ci95": (out["mean"] - half, out["mean"] + half), "sd": math.sqrt((va + vb) / 2)}


def mde(n: int, sd: float, paired: bool = True, power: float = 0.8, alpha: float = 0.05):
    """The smallest true difference a two-sided t-test at ``alpha`` detects with probability ``power``,
    given ``n`` seeds (pairs, or per variant when unpaired) and the spread ``sd`` (of the paired
    differences, or within a variant): solved on the noncentral t distribution."""
    from scipy import optimize, stats

    if not _num(sd) or n < 2:
        return NA("needs 2 seeds and a spread")
    if sd == 0:
        return 0.0
    df = n - 1 if paired else 2 * n - 2
    scale = math.sqrt(n) if paired else math.sqrt(n / 2)  # noncentrality per unit of effect / sd
    crit = float(stats.t.ppf(1 - alpha / 2, df))

    def gap(delta: float) -> float:
        nc = delta * scale
        got = float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))
        return (1.0 if math.isnan(got) else got) - power  # NaN far in the tail, where the power is 1

    hi = 1.0
    while gap(hi) < 0:  # the effect (in sds) grows until the test has the power
        hi *= 2
        if hi > 1e6:
            return NA("power not reached")
    return float(optimize.brentq(gap, 0.0, hi)) * sd
