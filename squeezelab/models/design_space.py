"""SqueezeNet's microarchitecture design space (Iandola et al. 2016, §5.1), as a pure function.

Five metaparameters fix the dimensions of every Fire module, for Fire index i = 0, 1, ...
(fire2 is i = 0):

    e_i  = base_e + incr_e * floor(i / freq)       expand filters (1x1 + 3x3)
    e3x3 = pct_3x3 * e_i                            3x3 expand filters
    e1x1 = e_i - e3x3                               1x1 expand filters
    s1x1 = sr * e_i                                 squeeze filters (sr: squeeze ratio)

What differs from the paper: it does not say how fractions are rounded. Here e3x3 and s1x1 are
rounded half-up, and every count is clamped to at least 1 channel (and e3x3 to at most e_i - 1), so
every sr in (0, 1] and pct_3x3 in [0.01, 0.99] of paper Fig. 3 gives a valid network. With the
paper's values (base_e=128, incr_e=128, pct_3x3=0.5, freq=2, sr=0.125) nothing is rounded and the
result is exactly Table 1.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from squeezelab.errors import ConfigError


class FireSpec(NamedTuple):
    """One Fire module's filter counts, in the paper's names."""

    s1x1: int
    e1x1: int
    e3x3: int

    @property
    def out_channels(self) -> int:
        return self.e1x1 + self.e3x3


def _round_half_up(x: float) -> int:
    # Python's round() rounds half to even (round(2.5) == 2); the paper's counts should not depend on that.
    return int(math.floor(x + 0.5))


def fire_specs(
    base_e: int = 128,
    incr_e: int = 128,
    pct_3x3: float = 0.5,
    freq: int = 2,
    sr: float = 0.125,
    num_fire: int = 8,
) -> list[FireSpec]:
    """Per-Fire (s1x1, e1x1, e3x3) for Fire i = 0..num_fire-1 (fire2, fire3, ...). Pure."""
    if base_e < 2 or incr_e < 0 or freq < 1 or num_fire < 1:
        raise ConfigError(f"need base_e >= 2, incr_e >= 0, freq >= 1, num_fire >= 1; got "
                          f"{base_e}, {incr_e}, {freq}, {num_fire}")
    if not (0.0 < sr <= 1.0 and 0.0 < pct_3x3 < 1.0):
        raise ConfigError(f"need 0 < sr <= 1 and 0 < pct_3x3 < 1; got sr={sr}, pct_3x3={pct_3x3}")
    specs = []
    for i in range(num_fire):
        e_i = base_e + incr_e * (i // freq)
        e3x3 = min(max(_round_half_up(pct_3x3 * e_i), 1), e_i - 1)
        s1x1 = max(_round_half_up(sr * e_i), 1)
        specs.append(FireSpec(s1x1=s1x1, e1x1=e_i - e3x3, e3x3=e3x3))
    return specs
