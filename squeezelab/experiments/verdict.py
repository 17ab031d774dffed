"""Convergence of runs and verdicts on a study's claims, for reports.

Converged: a run's per-epoch validation top-1 gained less than 1 point over the last 25% of its epochs
(the last epoch's score minus the score at the start of that last quarter); a variant is converged when
the mean of that gain over its seeds is, so that its conclusions rest on trained models, not on how far
each got by the budget's end.

A claim (in the study file's ``published.claims``) states a seed document's finding as a comparison of
two variants, A and B, on one metric:

    - claim: "Simple bypass raises top-1 over vanilla SqueezeNet"
      source: "paper Table 3 (ImageNet)"
      a: {model.options.bypass: simple}        # a variant, matched as the published rows are
      b: {model.options.bypass: none}
      metric: top1                             # default: the study's metric
      published: 2.9                           # A - B in points, on the seed's data
      kind: difference                         # difference (with the published number) | higher (A > B,
                                               # direction only) | equal (a plateau) | at_least (A >= B, parity)

Verdicts: ``reproduced``, ``same direction, smaller``, ``not detected`` (the interval holds 0: the
minimal detectable effect says how large an effect could hide), ``reversed``; for ``equal`` claims
``reproduced (no difference detected)`` or ``not reproduced``. A claim on a variant that did not
converge says so.
"""

from __future__ import annotations

import math

from squeezelab.errors import ConfigError
from squeezelab.experiments import stats

CONVERGED_GAIN = 0.01  # a point of top-1, as a fraction
KINDS = ("difference", "higher", "equal", "at_least")
CLAIM_KEYS = ("claim", "source", "a", "b", "metric", "published", "kind", "note")


def last_quarter_gain(top1: list[float]):
    """Top-1 gained over the last 25% of the epochs (a fraction), or NA for a curve too short."""
    vals = [v for v in top1 if v is not None]
    if len(vals) < 2 or len(vals) != len(top1):
        return stats.NA("no per-epoch curve")
    k = max(1, math.ceil(len(vals) / 4))
    return vals[-1] - vals[-1 - k]


def convergence(curves: list[list[float]]) -> dict:
    """Over one variant's finished runs: {"gain": describe(gains), "runs": n, "converged_runs": m,
    "converged": the mean gain is under a point (NA when no run has a curve)}."""
    gains = [g for g in (last_quarter_gain(c) for c in curves) if not isinstance(g, stats.NA)]
    d = stats.describe(gains)
    ok = stats.NA("no per-epoch curve") if not gains else bool(d["mean"] < CONVERGED_GAIN)
    return {"gain": d, "runs": len(gains), "converged_runs": sum(g < CONVERGED_GAIN for g in gains), "converged": ok}


def check_claims(claims: object) -> list[dict]:
    """The study file's claims, validated (a mistake in one is one line, before anything runs)."""
    if claims is None:
        return []
    if not isinstance(claims, list):
        raise ConfigError(f"published.claims: expected a list of claims, got {type(claims).__name__}")
    out = []
    for i, c in enumerate(claims):
        where = f"published.claims[{i}]"
        if not isinstance(c, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(c).__name__}")
        unknown = [k for k in c if k not in CLAIM_KEYS]
        if unknown:
            raise ConfigError(f"unknown key {where}.{unknown[0]}; valid keys: {', '.join(CLAIM_KEYS)}")
        if not isinstance(c.get("claim"), str) or not c["claim"].strip():
            raise ConfigError(f"{where}.claim: expected the claim in a sentence")
        for side in ("a", "b"):
            if not isinstance(c.get(side), dict) or not c[side]:
                raise ConfigError(f"{where}.{side}: expected a variant as {{key: value}}, got {c.get(side)!r}")
        if c.get("metric", "top1") not in ("top1", "top5"):
            raise ConfigError(f"{where}.metric: expected top1 or top5, got {c.get('metric')!r}")
        kind = c.get("kind", "difference")
        if kind not in KINDS:
            raise ConfigError(f"{where}.kind: expected one of {', '.join(KINDS)}, got {kind!r}")
        pub = c.get("published")
        if pub is not None and (isinstance(pub, bool) or not isinstance(pub, (int, float)) or not math.isfinite(pub)):
            raise ConfigError(f"{where}.published: expected A - B in points (a number), got {pub!r}")
        if kind == "difference" and not pub:
            raise ConfigError(f"{where}: a difference claim needs its published effect (A - B, non-zero points)")
        out.append({**c, "kind": kind})
    return out


def verdict(kind: str, published: float | None, eff: dict) -> str:
    """The verdict on a claim from our effect (``stats.effect``, fractions) and the published A - B
    (points)."""
    if not isinstance(eff["ci95"], tuple):
        return f"undecided ({eff['ci95']})"
    lo, hi = eff["ci95"]
    mean = eff["mean"]
    significant = lo > 0 or hi < 0
    if kind == "equal":
        return "not reproduced" if significant else "reproduced (no difference detected)"
    if kind == "at_least":
        return "reversed" if hi < 0 else "reproduced"
    want = 1.0 if kind == "higher" else math.copysign(1.0, published)
    if not significant:
        return "not detected"
    if math.copysign(1.0, mean) != want:
        return "reversed"
    if kind == "higher" or published is None:
        return "reproduced"
    pub = published / 100
    return "reproduced" if (mean * want >= abs(pub) or lo <= pub <= hi) else "same direction, smaller"
