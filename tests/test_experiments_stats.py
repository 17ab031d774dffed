"""squeezelab.experiments.stats on fixed numbers: values checked against scipy and by hand, and every
degenerate input gives n/a with its reason (never NaN, never an exception)."""

from __future__ import annotations

import math

import pytest
from scipy import stats as sp

from squeezelab.experiments import stats

A = {0: 0.61, 1: 0.64, 2: 0.59, 3: 0.66}
B = {0: 0.58, 1: 0.60, 2: 0.57, 3: 0.65}


def test_describe_mean_std_and_t_interval():
    d = stats.describe(A.values())
    xs = list(A.values())
    assert d["n"] == 4 and d["mean"] == pytest.approx(0.625)
    assert d["std"] == pytest.approx(0.031091263510296, rel=1e-9)  # sample std, ddof 1
    lo, hi = sp.t.interval(0.95, 3, loc=0.625, scale=sp.sem(xs))
    assert d["ci95"] == pytest.approx((lo, hi))
    assert d["ci95"][1] - d["mean"] == pytest.approx(3.182446305284263 * d["std"] / 2)  # t_0.975,3 by table


def test_paired_when_the_same_seeds_ran_both():
    r = stats.compare(A, B)
    ref = sp.ttest_rel(list(A.values()), list(B.values()))
    assert r["test"] == "paired t" and r["n"] == 4
    assert (r["t"], r["p"]) == pytest.approx((ref.statistic, ref.pvalue))
    diff = [a - b for a, b in zip(A.values(), B.values())]
    assert r["mean_diff"] == pytest.approx(0.025)
    assert r["d"] == pytest.approx(0.025 / sp.tstd(diff))
    assert r["wilcoxon_p"] == pytest.approx(sp.wilcoxon(diff).pvalue)


def test_welch_when_seeds_differ():
    b = {10: 0.58, 11: 0.60, 12: 0.50}
    r = stats.compare(A, b)
    ref = sp.ttest_ind(list(A.values()), list(b.values()), equal_var=False)
    assert r["test"] == "Welch t" and r["n"] == (4, 3)
    assert (r["t"], r["p"]) == pytest.approx((ref.statistic, ref.pvalue))
    pooled = math.sqrt((3 * sp.tvar(list(A.values())) + 2 * sp.tvar(list(b.values()))) / 5)
    assert r["d"] == pytest.approx((0.625 - 0.56) / pooled)
    assert r["wilcoxon_p"] == pytest.approx(sp.mannwhitneyu(list(A.values()), list(b.values())).pvalue)


def test_pearson_and_holm_by_hand():
    r = stats.pearson([0.125, 0.25, 0.5, 0.75, 1.0], [0.80, 0.83, 0.85, 0.86, 0.86])
    ref = sp.pearsonr([0.125, 0.25, 0.5, 0.75, 1.0], [0.80, 0.83, 0.85, 0.86, 0.86])
    assert (r["r"], r["p"]) == pytest.approx((ref.statistic, ref.pvalue))
    # Holm: sorted 0.01, 0.03, 0.04 -> 3 x 0.01, 2 x 0.03, max(0.06, 1 x 0.04); NA entries do not count
    out = stats.holm([0.04, 0.01, stats.NA("one seed"), 0.03])
    assert out[0] == pytest.approx(0.06) and out[1] == pytest.approx(0.03) and out[3] == pytest.approx(0.06)
    assert isinstance(out[2], stats.NA)
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1


@pytest.mark.parametrize("a, b, reason", [
    ({0: 0.5}, {0: 0.6}, "needs 2 finished seeds"),                       # one seed
    ({0: 0.5, 1: 0.5}, {0: 0.5, 1: 0.5}, "identical values"),             # nothing differs
    ({0: 0.5, 1: 0.6}, {0: 0.4, 1: 0.5}, "differences are all equal"),    # paired, no variance
    ({0: 0.5, 1: 0.6}, {0: 0.2, 1: 0.3}, "differences are all equal"),    # ... up to float rounding
    ({0: 0.5, 1: 0.5}, {2: 0.4, 3: 0.4}, "no variance within either"),     # Welch, no variance
    ({0: 0.5, 1: None}, {0: 0.4, 1: 0.5}, "needs 2 finished seeds"),       # a failed run
    ({0: float("nan"), 1: 0.6}, {0: 0.4, 1: 0.5}, "needs 2 finished seeds"),
])
def test_degenerate_comparisons_are_na_with_a_reason(a, b, reason):
    r = stats.compare(a, b)
    for key in ("t", "p", "d"):
        assert isinstance(r[key], stats.NA) and reason in r[key].reason, r
        assert str(r[key]).startswith("n/a (")
    assert not any(isinstance(v, float) and math.isnan(v) for v in r.values())


def test_degenerate_descriptions_and_correlations():
    assert isinstance(stats.describe([0.5])["ci95"], stats.NA)
    assert str(stats.describe([])["mean"]) == "n/a (no finished run)"
    assert stats.describe([0.5, 0.5])["ci95"] == (0.5, 0.5)  # a zero-width interval is a number, not n/a
    assert "needs 3 points" in str(stats.pearson([1, 2], [3, 4])["r"])
    assert "identical values" in str(stats.pearson([1, 1, 1], [0.3, 0.4, 0.5])["r"])
    assert stats.fmt(stats.NA("one seed")) == "n/a (one seed)"


# ------------------------------------------------------------------ effects, power, verdicts


def test_effect_is_the_paired_t_interval_of_the_differences():
    e = stats.effect(A, B)
    diff = [A[s] - B[s] for s in A]
    lo, hi = sp.t.interval(0.95, 3, loc=sum(diff) / 4, scale=sp.sem(diff))
    assert e["test"] == "paired t" and e["n"] == 4
    assert e["mean"] == pytest.approx(0.025) and e["ci95"] == pytest.approx((lo, hi))
    assert e["p"] == pytest.approx(sp.ttest_rel(list(A.values()), list(B.values())).pvalue)


def test_effect_is_welch_when_the_seeds_differ():
    b = {10 + s: v for s, v in B.items()}
    e = stats.effect(A, b)
    ref = sp.ttest_ind(list(A.values()), list(b.values()), equal_var=False)
    lo, hi = ref.confidence_interval(0.95)
    assert e["test"] == "Welch t" and e["ci95"] == pytest.approx((lo, hi)) and e["p"] == pytest.approx(ref.pvalue)


@pytest.mark.parametrize("n, sd", [(3, 0.02), (5, 0.02), (5, 0.05), (10, 0.01), (30, 0.03)])
def test_minimal_detectable_effect_has_power_0_8(n, sd):
    """At the MDE the paired t-test's power (simulated: 4,000 experiments) is 0.8; the normal
    approximation (z_0.975 + z_0.8) sd / sqrt(n) is a lower bound that the t correction raises."""
    import numpy as np

    mde = stats.mde(n, sd)
    assert mde > (sp.norm.ppf(0.975) + sp.norm.ppf(0.8)) * sd / math.sqrt(n)
    rng = np.random.default_rng(0)
    diffs = rng.normal(mde, sd, size=(4000, n))
    t = diffs.mean(1) / (diffs.std(1, ddof=1) / math.sqrt(n))
    power = float(np.mean(np.abs(t) > sp.t.ppf(0.975, n - 1)))
    assert power == pytest.approx(0.8, abs=0.025)


def test_mde_degenerate_inputs():
    assert stats.mde(5, 0.0) == 0.0
    assert isinstance(stats.mde(1, 0.02), stats.NA) and isinstance(stats.mde(5, stats.NA("x")), stats.NA)


def _eff(mean, lo, hi):
    return {"mean": mean / 100, "ci95": (lo / 100, hi / 100)}


@pytest.mark.parametrize("kind, published, eff, verdict", [
    ("difference", 2.9, _eff(3.5, 1.0, 6.0), "reproduced"),
    ("difference", 2.9, _eff(2.0, 0.5, 3.5), "reproduced"),             # the published effect is inside the CI
    ("difference", 2.9, _eff(1.0, 0.3, 1.7), "same direction, smaller"),
    ("difference", 2.9, _eff(1.0, -0.5, 2.5), "not detected"),
    ("difference", 2.9, _eff(-2.0, -3.5, -0.5), "reversed"),
    ("difference", -1.0, _eff(-2.0, -3.5, -0.5), "reproduced"),
    ("higher", None, _eff(2.0, 0.5, 3.5), "reproduced"),
    ("higher", None, _eff(-2.0, -3.5, -0.5), "reversed"),
    ("equal", 0.0, _eff(0.5, -1.0, 2.0), "reproduced (no difference detected)"),
    ("equal", 0.0, _eff(2.0, 0.5, 3.5), "not reproduced"),
    ("at_least", 0.3, _eff(-1.0, -2.5, 0.5), "reproduced"),
    ("at_least", 0.3, _eff(-3.0, -4.5, -1.5), "reversed"),
])
def test_verdicts(kind, published, eff, verdict):
    from squeezelab.experiments.verdict import verdict as judge

    assert judge(kind, published, eff) == verdict


def test_convergence_is_the_gain_over_the_last_quarter():
    from squeezelab.experiments.verdict import convergence, last_quarter_gain

    flat = [0.1, 0.3, 0.4, 0.45, 0.46, 0.462, 0.458, 0.461]  # 8 epochs: the last 2 vs epoch 6
    assert last_quarter_gain(flat) == pytest.approx(0.461 - 0.462)
    rising = [0.1, 0.2, 0.3, 0.4, 0.5]  # ceil(5/4) = 2 epochs: 0.5 - 0.3
    assert last_quarter_gain(rising) == pytest.approx(0.2)
    c = convergence([flat, rising])
    assert c["runs"] == 2 and c["converged_runs"] == 1 and c["converged"] is False  # mean gain ~ +10 points
    assert convergence([flat, flat])["converged"] is True
    assert isinstance(convergence([[0.5]])["converged"], stats.NA)


@pytest.mark.parametrize("claim, words", [
    ([{"a": {"x": 1}, "b": {"x": 2}}], "claim: expected the claim"),
    ([{"claim": "c", "a": {"x": 1}}], ".b: expected a variant"),
    ([{"claim": "c", "a": {"x": 1}, "b": {"x": 2}}], "needs its published effect"),
    ([{"claim": "c", "a": {"x": 1}, "b": {"x": 2}, "kind": "bigger"}], "kind: expected one of"),
    ([{"claim": "c", "a": {"x": 1}, "b": {"x": 2}, "published": "2.9"}], "published: expected"),
    ([{"claim": "c", "a": {"x": 1}, "b": {"x": 2}, "published": 1, "colour": 1}], "unknown key"),
    ({"claim": "c"}, "expected a list"),
])
def test_bad_claims_are_one_line(claim, words):
    from squeezelab.errors import ConfigError
    from squeezelab.experiments.verdict import check_claims

    with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
        check_claims(claim)
