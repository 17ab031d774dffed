"""Weight sharing (trained quantisation, Deep Compression section 3): per-layer k-means over the
surviving weights, then fine-tuning of the centroids.

- ``kmeans_1d(values, k, init)``: exact Lloyd iterations in one dimension. The values are sorted once;
  with sorted centroids every cluster is a contiguous run of the sorted values, so an iteration is a
  ``searchsorted`` of the k-1 midpoints plus differences of one prefix sum: O(k log n), not O(nk).
  SqueezeNet's 26 layers take milliseconds on a CPU. Initialisation (Han et al. compared them and
  found linear best, because it keeps the few large weights): ``linear`` (evenly between min and
  max), ``density`` (evenly in the CDF) or ``random`` (Forgy: k distinct weights).
- Pruned zeros stay exact zeros: k-means runs over the non-zero weights only, and code 0 of a layer
  that has zeros is the fixed value 0.0 (what the paper's file does too).
- ``share_(model, spec)``: quantise in place; with ``trainable=True`` every shared layer's weight
  becomes ``codebook[codes]`` through a torch parametrization whose trained tensor is the codebook:
  autograd then sums the gradients of all weights sharing a centroid into it (Han's update rule),
  and the shared structure holds through any optimizer step by construction.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from squeezelab.compression.layers import check_patterns, per_layer, weight_layers
from squeezelab.compression.methods import Context, Hook, Method, register
from squeezelab.errors import ConfigError

INITS = ("linear", "density", "random")
MAX_BITS = 16


def kmeans_1d(values: torch.Tensor, k: int, init: str = "linear", iters: int = 1000,
              generator: torch.Generator | None = None,
              importance: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D k-means -> (centroids float32 [<= k], sorted ascending; codes int64 like ``values``).

    With no more distinct values than k the centroids are exactly the distinct values (lossless:
    an already-shared layer is kept as it is). Empty clusters are moved into the worst ones and any
    still empty at the end are dropped, so every returned centroid is used. ``importance`` (>= 0, like
    ``values``) weights each value's squared error: Hessian/Fisher-weighted k-means (Choi et al. 2017,
    "Towards the limit of network quantization"); the assignment stays nearest-centroid, each
    centroid becomes the importance-weighted mean of its cluster."""
    if init not in INITS:
        raise ConfigError(f"unknown k-means init {init!r}; valid: {', '.join(INITS)}")
    if k < 1:
        raise ConfigError(f"k-means needs k >= 1, got {k}")
    flat = values.detach().flatten().float()
    if flat.numel() == 0:
        return flat.new_zeros(0), torch.zeros(0, dtype=torch.int64, device=flat.device)
    distinct, inverse = torch.unique(flat, sorted=True, return_inverse=True)
    if distinct.numel() <= k:
        return distinct, inverse.view(values.shape)
    sorted_vals, order = torch.sort(flat)
    weight = torch.ones_like(sorted_vals, dtype=torch.float64) if importance is None else \
        importance.detach().flatten().double()[order].clamp(min=0) + 1e-12  # (no cluster of weight 0)
    zero = torch.zeros(1, dtype=torch.float64, device=flat.device)
    prefix_w = torch.cat([zero, torch.cumsum(weight, 0)])
    prefix_wx = torch.cat([zero, torch.cumsum(weight * sorted_vals.double(), 0)])
    centroids = _init_centroids(sorted_vals, distinct, k, init, generator).double()
    n = sorted_vals.numel()
    bounds = None
    for _ in range(iters):
        new_bounds = _assign(sorted_vals, centroids)
        if bounds is not None and torch.equal(new_bounds, bounds):
            break
        bounds = new_bounds
        counts = bounds[1:] - bounds[:-1]
        mass = prefix_w[bounds[1:]] - prefix_w[bounds[:-1]]
        sums = prefix_wx[bounds[1:]] - prefix_wx[bounds[:-1]]
        centroids = torch.where(counts > 0, sums / mass.clamp(min=1e-300), centroids)
        if bool((counts == 0).any()):
            centroids = _relocate_empty(sorted_vals, bounds, counts, centroids)
    counts = bounds[1:] - bounds[:-1]
    used = counts > 0
    centroids = centroids[used].float()
    labels_sorted = torch.repeat_interleave(torch.arange(int(used.sum()), device=flat.device), counts[used])
    codes = torch.empty(n, dtype=torch.int64, device=flat.device)
    codes[order] = labels_sorted
    return centroids, codes.view(values.shape)


def _assign(sorted_vals: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Cluster j = sorted_vals[bounds[j]:bounds[j+1]] (nearest centroid; centroids ascending)."""
    mids = ((centroids[1:] + centroids[:-1]) / 2).float()
    n = torch.full((1,), sorted_vals.numel(), dtype=torch.int64, device=sorted_vals.device)
    return torch.cat([n.new_zeros(1), torch.searchsorted(sorted_vals, mids), n])


def _relocate_empty(sorted_vals, bounds, counts, centroids) -> torch.Tensor:
    """As scikit-learn's Lloyd: each empty cluster's centroid moves to one of the points farthest from
    their own centroid (they then split the clusters they sat in); the centroids are re-sorted."""
    empty = torch.nonzero(counts == 0).flatten()
    dist = (sorted_vals.double() - torch.repeat_interleave(centroids, counts)).abs()
    far = torch.topk(dist, min(empty.numel(), dist.numel())).indices
    centroids = centroids.clone()
    centroids[empty[:far.numel()]] = sorted_vals[far].double()
    return torch.sort(centroids).values


def _init_centroids(sorted_vals: torch.Tensor, distinct: torch.Tensor, k: int, init: str,
                    generator: torch.Generator | None) -> torch.Tensor:
    if init == "linear":
        return torch.linspace(float(sorted_vals[0]), float(sorted_vals[-1]), k, device=sorted_vals.device)
    if init == "density":
        q = torch.linspace(0, 1, k, device=sorted_vals.device)
        idx = (q * (sorted_vals.numel() - 1)).round().long()
        return sorted_vals[idx]
    pick = torch.randperm(distinct.numel(), generator=generator, device="cpu")[:k].to(distinct.device)
    return torch.sort(distinct[pick]).values


@dataclass(frozen=True)
class Shared:
    """One weight-shared layer: ``weight = codebook[codes]``; ``codebook[0] == 0.0`` when ``zero``."""

    codebook: torch.Tensor  # float32 [K]
    codes: torch.Tensor  # int64, the weight's shape
    zero: bool  # code 0 is the pruned zero (fixed, not trained)

    def dense(self) -> torch.Tensor:
        return self.codebook[self.codes]


def share_tensor(weight: torch.Tensor, bits: int, init: str = "linear",
                 generator: torch.Generator | None = None, importance: torch.Tensor | None = None) -> Shared:
    """k-means of the non-zero weights into 2^bits codes (one of them the exact zero when some are 0);
    ``importance``: per-weight weights of the squared error (see kmeans_1d)."""
    if not 1 <= bits <= MAX_BITS:
        raise ConfigError(f"share.bits must be in [1, {MAX_BITS}], got {bits}")
    w = weight.detach().float()
    nonzero = w != 0
    zero = bool((~nonzero).any())
    k = (1 << bits) - (1 if zero else 0)
    if k < 1:
        raise ConfigError("1-bit sharing of a pruned layer leaves no code for its non-zero weights")
    centroids, cluster = kmeans_1d(w[nonzero], k, init, generator=generator,
                                   importance=None if importance is None else importance[nonzero])
    codes = torch.zeros(w.shape, dtype=torch.int64, device=w.device)
    codes[nonzero] = cluster + (1 if zero else 0)
    codebook = torch.cat([centroids.new_zeros(1), centroids]) if zero else centroids
    return Shared(codebook, codes, zero)


@dataclass(frozen=True)
class ShareSpec:
    """Bits per layer ({pattern: bits, "default": bits}), layers and k-means initialisation."""

    bits: Mapping[str, int] | int = 8
    layers: Sequence[str] = ("*",)
    exclude: Sequence[str] = ()
    init: str = "linear"
    seed: int = 0  # for init "random"
    section = "share"  # (not a field) the config section errors name

    def targets(self, model: nn.Module) -> dict[str, int]:
        layers = weight_layers(model, self.layers, self.exclude)
        check_patterns(self.bits, list(layers), f"{self.section}.bits")
        out = {}
        for name in layers:
            bits = per_layer(self.bits, name, "bits")
            if bits is None:
                continue
            if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= MAX_BITS:
                raise ConfigError(f"{self.section}.bits for {name} must be an integer in [1, {MAX_BITS}], got {bits!r}")
            out[name] = bits
        return out


class SharedWeight(nn.Module):
    """Parametrization: the trained tensor is the codebook's free entries; ``forward`` -> weight."""

    def __init__(self, codes: torch.Tensor, codebook: torch.Tensor, zero: bool):
        super().__init__()
        self.register_buffer("codes", codes)
        self.zero = zero
        self._init = codebook[1:] if zero else codebook  # handed to right_inverse once

    def forward(self, free: torch.Tensor) -> torch.Tensor:
        table = torch.cat([free.new_zeros(1), free]) if self.zero else free
        return table[self.codes]

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        return self._init.to(weight.device, weight.dtype).clone()


def share_(model: nn.Module, spec: ShareSpec, *, trainable: bool = False,
           shared: Mapping[str, Shared] | None = None,
           importance: Mapping[str, torch.Tensor] | None = None) -> dict[str, Shared]:
    """Quantise the layers ``spec`` selects in place. ``trainable``: register the codebook
    parametrization (the optimizer must be built afterwards). ``shared``: use these codebooks and
    codes (e.g. from a checkpoint) instead of running k-means. ``importance``: {layer: per-weight
    importance} for weighted k-means (e.g. the diagonal Fisher information)."""
    modules = dict(model.named_modules())
    generator = torch.Generator().manual_seed(spec.seed)
    out = {}
    for name, bits in spec.targets(model).items():
        module = modules[name]
        s = shared[name] if shared is not None else share_tensor(
            module.weight, bits, spec.init, generator, None if importance is None else importance.get(name))
        with torch.no_grad():
            module.weight.copy_(s.dense().to(module.weight.dtype))
        if trainable:
            codes = s.codes.to(module.weight.device)
            parametrize.register_parametrization(module, "weight", SharedWeight(codes, s.codebook, s.zero),
                                                 unsafe=True)
        out[name] = s
    return out


def current(model: nn.Module) -> dict[str, Shared]:
    """The codebooks and codes of a model's trainable shared layers, as they are now."""
    out = {}
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            p = module.parametrizations.weight
            param = p[0]
            if isinstance(param, SharedWeight):
                free = p.original.detach()
                table = torch.cat([free.new_zeros(1), free]) if param.zero else free
                out[name] = Shared(table.float(), param.codes, param.zero)
    return out


def freeze_(model: nn.Module) -> None:
    """Replace every codebook parametrization by its plain weight (values unchanged)."""
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight") and isinstance(module.parametrizations.weight[0], SharedWeight):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)


# ------------------------------------------------------------------------------------ the method


class SharedHook(Hook):
    """Training of shared weights: the parametrization holds the form, so there is nothing to do per
    step; the codebooks and codes go into checkpoints as ``<section>.codebook.<layer>`` /
    ``<section>.codes.<layer>``."""

    def __init__(self, section: str):
        self.section = section

    def state(self, model: nn.Module) -> tuple[dict, dict[str, torch.Tensor]]:
        shared = current(model)
        tensors = {}
        for name, s in shared.items():
            tensors[f"{self.section}.codes.{name}"] = s.codes.to(torch.int32)
            tensors[f"{self.section}.codebook.{name}"] = s.codebook
        return {name: {"zero": s.zero} for name, s in shared.items()}, tensors


def restored(section: str, meta: Mapping, tensors: Mapping[str, torch.Tensor]) -> dict[str, Shared]:
    """The codebooks and codes a SharedHook saved (``--resume``)."""
    return {name: Shared(tensors[f"{section}.codebook.{name}"].float(), tensors[f"{section}.codes.{name}"].long(),
                         bool(info["zero"])) for name, info in meta.items()}


class QuantiserMethod(Method):
    """A weight quantiser whose result is ``codebook[codes]`` per layer (what .sqz codes and what trains
    as a codebook): subclasses say how a layer's codebook is found (``shared_layers``); calibration
    (Fisher importance, bias correction) and training come from here."""

    def needs_data(self, section) -> bool:
        return (getattr(section, "importance", "none") == "fisher" or bool(getattr(section, "correct_bias", False))
                or getattr(section, "reconstruct", "none") != "none")

    def shared_layers(self, model: nn.Module, section, spec, importance) -> dict[str, Shared]:
        raise NotImplementedError

    def rate_penalties(self, model: nn.Module, spec, shared: dict[str, Shared]) -> dict[str, torch.Tensor] | None:
        """{layer: per-code penalty} that GPTQ re-rounding adds to the squared error (None: plain rounding)."""
        return None

    def _apply(self, model, section, ctx: Context, trainable: bool, shared: dict | None) -> None:
        from squeezelab.compression import calibrate

        spec = self.spec(section, ctx.seed)
        targets = list(spec.targets(model))
        reconstruct = getattr(section, "reconstruct", "none")
        if reconstruct != "none" and getattr(section, "correct_bias", False):
            raise ConfigError(f"{self.section}.correct_bias and {self.section}.reconstruct: reconstruct already "
                              f"solves the biases; set one of them")
        importance = reference = original = None
        if shared is None and getattr(section, "importance", "none") == "fisher":
            importance = calibrate.fisher_diagonal(model, ctx.data, section.calibration_images, ctx.seed, targets,
                                                   self.section)
        if shared is None and getattr(section, "correct_bias", False):
            modules = dict(model.named_modules())
            reference = {n: modules[n].weight.detach().clone() for n in targets}
        if shared is None and reconstruct != "none":  # the outputs each quantised layer is solved to match
            original = ctx.original if ctx.original is not None else copy.deepcopy(model)
        if shared is None:
            shared = self.shared_layers(model, section, spec, importance)
        if original is not None:
            share_(model, spec, shared=shared)
            shared = calibrate.reconstruct_(model, original, shared, ctx.data, section.calibration_images, ctx.seed,
                                            self.section, codes=reconstruct == "gptq",
                                            penalties=self.rate_penalties(original, spec, shared))
        share_(model, spec, trainable=trainable, shared=shared)
        if reference is not None:
            calibrate.correct_bias_(model, reference, ctx.data, section.calibration_images, ctx.seed, self.section)

    def apply_(self, model: nn.Module, section, ctx: Context) -> None:
        self._apply(model, section, ctx, trainable=False, shared=None)

    def training(self, model: nn.Module, section, ctx: Context, state) -> SharedHook:
        self._apply(model, section, ctx, trainable=True,
                    shared=restored(self.section, *state) if state is not None else None)
        return SharedHook(self.section)


class ShareMethod(QuantiserMethod):
    """The ``share`` section: k-means weight sharing with trained centroids (Deep Compression section 3)."""

    section = "share"
    summary = ("k-means weight sharing, trained centroids (Han et al. 2016); Fisher-weighted; bias correction; "
               "layer-wise reconstruction (GPTQ rounding + least-squares codebooks)")

    def spec(self, s, seed: int = 0) -> ShareSpec:
        return ShareSpec(s.bits, s.layers, s.exclude, s.init, seed)

    def shared_layers(self, model: nn.Module, section, spec: ShareSpec, importance) -> dict[str, Shared]:
        modules, generator = dict(model.named_modules()), torch.Generator().manual_seed(spec.seed)
        return {name: share_tensor(modules[name].weight, bits, spec.init, generator,
                                   None if importance is None else importance.get(name))
                for name, bits in spec.targets(model).items()}


register(ShareMethod())
