"""Entropy-constrained scalar quantisation (the ``ecq`` section): a layer's codebook chosen for its
coded size as well as its error.

k-means (``share``) minimises the squared error for a fixed number of codes, but a .sqz file entropy
codes the codes, so what a code costs is -log2 of its frequency, not log2 K. Entropy-constrained
quantisation (Chou, Lookabaugh & Gray 1989, "Entropy-constrained vector quantization", in one
dimension; used for networks by Wiedemann et al. 2019 and in NNCodec's lineage) minimises
D + lambda R instead: each weight goes to the code with the least

    (w - c_j)^2 + rate_weight * var(layer) * (-log2 p_j)

(``var`` makes rate_weight free of the layer's scale: it is the normalised error one bit is worth), and
each code's centroid and frequency p_j are then re-estimated, until the assignment stops changing.
Rare codes get dearer and empty out, frequent ones absorb their neighbours: fewer bits per weight for a
little more error. rate_weight 0 is k-means. As ``share``, pruned zeros stay exact zeros (code 0), the
result is ``codebook[codes]`` per layer, and in training the codebooks train (``QuantiserMethod``).

``zeros: free`` (with ``reconstruct: gptq``, for pruned layers): GPTQ's rate-priced rounding may also
round a KEPT weight to the exact zero. The codes are then priced by their frequency over all the
layer's weights, so a non-zero code also pays for its position in the sparse layout and the zero is
cheap, and the layer's sparsity follows the rate instead of staying the pruning's (the rounding's
error feedback moves the removed weight's output error onto the weights not yet rounded, as SparseGPT
does). Measured per layer (results/rate_accuracy/notes.md): 3-11% fewer bytes at the same KL on the
authors' pruned layers. ``fixed`` (the default): only the pruned weights are zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from squeezelab.compression.layers import check_patterns, per_layer, weight_layers
from squeezelab.compression.methods import register
from squeezelab.compression.share import MAX_BITS, QuantiserMethod, Shared, ShareSpec, kmeans_1d
from squeezelab.errors import ConfigError

CHUNK = 1 << 16  # weights per step of the assignment (a chunk x codes cost matrix)


def ecq_1d(values: torch.Tensor, k: int, rate_weight: float, iters: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (centroids float32 ascending, codes int64 like ``values``), at most ``k`` codes, every one used.
    Starts from k-means (linear init); ``rate_weight`` 0 returns k-means' answer."""
    if rate_weight < 0 or not math.isfinite(rate_weight):
        raise ConfigError(f"ecq.rate_weight must be a finite number >= 0, got {rate_weight}")
    centroids, codes = kmeans_1d(values, k)
    flat = values.detach().flatten().float()
    if rate_weight == 0 or centroids.numel() <= 1:
        return centroids, codes
    price = rate_weight * float(flat.var())  # squared-error units one bit of rate is worth
    codes = codes.flatten()
    for _ in range(iters):
        counts = torch.bincount(codes, minlength=centroids.numel()).double()
        bits = -(counts / counts.sum()).log2()
        new = _assign(flat, centroids, (price * bits).float())
        used, new = torch.unique(new, return_inverse=True)  # empty codes drop out (their rate is infinite)
        sums = torch.zeros(used.numel(), dtype=torch.float64).index_add_(0, new, flat.double())
        centroids = (sums / torch.bincount(new, minlength=used.numel()).double()).float()
        if used.numel() == counts.numel() and torch.equal(new, codes):
            break
        codes = new
    return centroids, new.view(values.shape)


def _assign(flat: torch.Tensor, centroids: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """argmin_j (w - c_j)^2 + bias_j for every w, in chunks (exact; the ties go to the lower code)."""
    out = torch.empty(flat.numel(), dtype=torch.int64)
    for i in range(0, flat.numel(), CHUNK):
        w = flat[i:i + CHUNK, None]
        out[i:i + CHUNK] = ((w - centroids[None, :]) ** 2 + bias[None, :]).argmin(dim=1)
    return out


def ecq_tensor(weight: torch.Tensor, bits: int, rate_weight: float) -> Shared:
    """ECQ of the non-zero weights into at most 2^bits codes (one of them the exact zero when some are 0)."""
    if not 1 <= bits <= MAX_BITS:
        raise ConfigError(f"ecq.bits must be in [1, {MAX_BITS}], got {bits}")
    w = weight.detach().float().cpu()
    nonzero = w != 0
    zero = bool((~nonzero).any())
    k = (1 << bits) - (1 if zero else 0)
    if k < 1:
        raise ConfigError("1-bit ECQ of a pruned layer leaves no code for its non-zero weights")
    centroids, cluster = ecq_1d(w[nonzero], k, rate_weight)
    codes = torch.zeros(w.shape, dtype=torch.int64)
    codes[nonzero] = cluster + (1 if zero else 0)
    codebook = torch.cat([centroids.new_zeros(1), centroids]) if zero else centroids
    return Shared(codebook, codes.to(weight.device), zero)


ZEROS = ("fixed", "free")


def code_price(weight: torch.Tensor, s: Shared, rate_weight: float, zeros: str = "fixed") -> torch.Tensor:
    """Per code of ``s``: rate_weight x var(kept weights) x -log2 of the code's frequency (squared-error
    units, as ``ecq_1d`` prices them). ``fixed``: frequencies among the kept weights, and the pruned
    zero (code 0) is not a code a kept weight may take (price +inf); ``free``: frequencies among all
    the weights, the zero included (a non-zero code then also pays for its position)."""
    w = weight.detach().float().cpu().flatten()
    codes = s.codes.flatten().cpu()
    kept = codes != 0 if s.zero else torch.ones_like(codes, dtype=torch.bool)  # (after any pruning)
    counted = codes if zeros == "free" else codes[kept]
    counts = torch.bincount(counted, minlength=s.codebook.numel()).double()
    price = rate_weight * float(w[kept].var()) * -(counts.clamp(min=1) / counts.sum()).log2()
    if s.zero and zeros != "free":
        price[0] = math.inf
    return price


@dataclass(frozen=True)
class ECQSpec(ShareSpec):
    """ShareSpec's bits (the most codes) and layers, plus the rate weight per layer ({pattern: value,
    "default": value}); ``init`` / ``seed`` are unused (ECQ starts from linear-init k-means)."""

    rate_weight: Mapping[str, float] | float = 0.0
    zeros: str = "fixed"  # "free": GPTQ's priced rounding may round kept weights to the zero (see above)
    section = "ecq"

    def rate_weights(self, names) -> dict[str, float]:
        check_patterns(self.rate_weight, list(names), "ecq.rate_weight")
        out = {}
        for name in names:
            value = per_layer(self.rate_weight, name, "rate_weight")
            value = 0.0 if value is None else value
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ConfigError(f"ecq.rate_weight for {name} must be a number >= 0, got {value!r}")
            out[name] = float(value)
        return out


class ECQMethod(QuantiserMethod):
    """The ``ecq`` section: entropy-constrained quantisation (one-shot, or with trained codebooks)."""

    section = "ecq"
    summary = "entropy-constrained scalar quantisation: codebooks chosen for error + lambda x coded bits"

    def spec(self, e, seed: int = 0) -> ECQSpec:
        if e.zeros == "free" and e.reconstruct != "gptq":  # (here: every path, one-shot or training, builds one)
            raise ConfigError("ecq.zeros: free needs ecq.reconstruct: gptq (the zeros are chosen by its rounding)")
        return ECQSpec(e.bits, e.layers, e.exclude, seed=seed, rate_weight=e.rate_weight, zeros=e.zeros)

    def check(self, e, model: nn.Module) -> None:
        spec = self.spec(e)
        spec.targets(model)
        spec.rate_weights(weight_layers(model, spec.layers, spec.exclude))

    def shared_layers(self, model: nn.Module, section, spec: ECQSpec, importance) -> dict[str, Shared]:
        modules, targets = dict(model.named_modules()), spec.targets(model)
        rates = spec.rate_weights(targets)
        return {name: ecq_tensor(modules[name].weight, bits, rates[name]) for name, bits in targets.items()}

    def rate_penalties(self, model: nn.Module, spec: ECQSpec, shared: dict[str, Shared]) -> dict[str, torch.Tensor]:
        """ECQ's own price of each code (``code_price``), so GPTQ re-rounding (``reconstruct: gptq``) keeps
        the entropy ECQ bought."""
        modules, rates = dict(model.named_modules()), spec.rate_weights(shared)
        return {name: code_price(modules[name].weight, s, rates[name], spec.zeros) for name, s in shared.items()}

register(ECQMethod())
