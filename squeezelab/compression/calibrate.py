"""Calibration on training images, for quantisers that look at data: the diagonal Fisher information
(importance-weighted k-means) and empirical bias correction. ``data`` is (training ImageSet, preset):
any object whose ``dataset[i][0]`` is a uint8 image and whose ``preset.eval`` preprocesses a batch."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from squeezelab.errors import ConfigError


def _calibration(data, images: int, seed: int, device, where: str) -> list[torch.Tensor]:
    """``images`` training images (a seeded choice), preprocessed by the preset's eval transform, in batches."""
    if data is None:
        raise ConfigError(f"{where}: calibration (correct_bias, reconstruct) needs training images (a run with data)")
    dataset, preset = data
    if images < 1:
        raise ConfigError(f"{where}.calibration_images must be >= 1, got {images}")
    pick = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:images]
    batch = torch.stack([dataset[i][0] for i in pick.tolist()])
    return [preset.eval(batch[i:i + 32].to(device)) for i in range(0, len(batch), 32)]


class _Reached(Exception):
    """Raised by the hook once the layer in question has its input or output (stops the forward there)."""


def _grab(inputs: list, x: torch.Tensor):
    inputs.append(x)
    raise _Reached


@torch.no_grad()
def correct_bias_(model: nn.Module, reference: dict[str, torch.Tensor], data, images: int, seed: int,
                  where: str = "share") -> None:
    """Empirical bias correction (Nagel et al. 2019, "Data-free quantization", section 4.2): layer by
    layer in network order, feed the calibration images through the (already corrected) shared model,
    and add to the layer's bias the mean over images and positions of (original weight - shared weight)
    applied to that layer's input, so the layer's outputs keep their mean."""
    device = next(model.parameters()).device
    batches = _calibration(data, images, seed, device, where)
    modules = dict(model.named_modules())
    was_training = model.training
    model.eval()
    for name, original in reference.items():
        layer = modules[name]
        if getattr(layer, "bias", None) is None or not isinstance(layer, nn.Conv2d):
            continue
        shift = torch.zeros_like(layer.bias)
        for x in batches:  # the layer's input is all this needs: the rest of the network is not run
            diff = nn.functional.conv2d(_captured(model, layer, x, output=False), original - layer.weight, None,
                                        layer.stride, layer.padding, layer.dilation, layer.groups)
            shift += diff.mean(dim=(0, 2, 3)) * len(x)
        layer.bias += shift / sum(len(x) for x in batches)
    model.train(was_training)


def fisher_diagonal(model: nn.Module, data, images: int, seed: int, layers: list[str],
                    where: str = "share") -> dict[str, torch.Tensor]:
    """Diagonal of the Fisher information of each layer's weight: the mean over ``images`` training
    images (one at a time, the preset's eval transform) of the squared gradient of the log-likelihood
    of a label drawn from the model's own prediction (the true Fisher, no labels needed)."""
    if data is None:
        raise ConfigError(f"{where}.importance fisher needs training images (a run with data)")
    dataset, preset = data
    if images < 1:
        raise ConfigError(f"{where}.calibration_images must be >= 1, got {images}")
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(dataset), generator=g)[:images]
    modules = dict(model.named_modules())
    sums = {name: torch.zeros_like(modules[name].weight) for name in layers}
    was_training = model.training
    model.eval()
    for i in pick.tolist():
        x = preset.eval(dataset[i][0][None].to(device))
        logits = model(x)
        y = torch.multinomial(logits.detach().float().softmax(1).cpu(), 1, generator=g).to(device)[:, 0]
        model.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(logits.float(), y).backward()
        for name in layers:
            sums[name] += modules[name].weight.grad.detach() ** 2
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {name: s / len(pick) for name, s in sums.items()}


class _Moments:
    """Running sums of a layer's inputs x (rows of im2col patches) and the original layer's outputs t,
    about a fixed shift (the first batch's means) so that float32 sums of post-ReLU activations do not
    cancel: -> covariances Sxx (d x d), Sxt (d x out) and the means."""

    def __init__(self):
        self.n = 0

    def add(self, x: torch.Tensor, t: torch.Tensor) -> None:
        if self.n == 0:
            self.x0, self.t0 = x.mean(0), t.mean(0)
            self.xx = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64)
            self.xt = torch.zeros(x.shape[1], t.shape[1], dtype=torch.float64)
            self.sx = torch.zeros(x.shape[1], dtype=torch.float64)
            self.st = torch.zeros(t.shape[1], dtype=torch.float64)
        x, t = x - self.x0, t - self.t0
        self.xx += (x.T @ x).double().cpu()
        self.xt += (x.T @ t).double().cpu()
        self.sx += x.sum(0).double().cpu()
        self.st += t.sum(0).double().cpu()
        self.n += x.shape[0]

    def solved(self):
        mx, mt = self.sx / self.n, self.st / self.n
        cxx = self.xx / self.n - torch.outer(mx, mx)
        cxt = self.xt / self.n - torch.outer(mx, mt)
        return cxx, cxt, mx + self.x0.double().cpu(), mt + self.t0.double().cpu()


def _rows(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A layer's input as rows of what each output position sees (im2col for a convolution)."""
    if isinstance(layer, nn.Linear):
        return x.reshape(-1, x.shape[-1]).float()
    cols = nn.functional.unfold(x.float(), layer.kernel_size, layer.dilation, layer.padding, layer.stride)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def _out_rows(t: torch.Tensor) -> torch.Tensor:
    return (t.float().movedim(1, -1) if t.dim() == 4 else t.float()).reshape(-1, t.shape[1])


def _captured(model: nn.Module, layer: nn.Module, x: torch.Tensor, output: bool) -> torch.Tensor:
    """The input (or output) of ``layer`` when ``model`` runs on ``x``; the forward stops there."""
    got: list[torch.Tensor] = []
    if output:
        handle = layer.register_forward_hook(lambda m, args, out: _grab(got, out))
    else:
        handle = layer.register_forward_pre_hook(lambda m, args: _grab(got, args[0]))
    try:
        model(x)
    except _Reached:
        pass
    finally:
        handle.remove()
    return got[0]


def _codebook_lsq(s, cxx: torch.Tensor, cxt: torch.Tensor, ridge: float) -> torch.Tensor:
    """The codebook minimising the layer's output error sum_o (A_o c - w*_o)' Cxx (A_o c - w*_o) for
    fixed codes A (the quadratic only needs Cxx: G = sum_o A_o' Cxx A_o, g = sum_o A_o' Cxt[:, o]),
    with a ridge towards the current codebook (weighted by G's diagonal) for codes few weights use.
    Code 0 of a pruned layer stays the exact zero."""
    k = s.codebook.numel()
    codes = s.codes.reshape(s.codes.shape[0], -1).cpu()  # (out, d)
    g_mat = torch.zeros(k * k, dtype=torch.float64)
    for lo in range(0, codes.shape[0], 16):  # a chunk of output channels at a time: (chunk, d, d) indices
        c = codes[lo:lo + 16]
        idx = (c[:, :, None] * k + c[:, None, :]).flatten()
        g_mat.index_add_(0, idx, cxx.expand(c.shape[0], -1, -1).flatten())
    g_mat = g_mat.view(k, k)
    g_vec = torch.zeros(k, dtype=torch.float64).index_add_(0, codes.flatten(), cxt.T.flatten())
    free = torch.arange(1 if s.zero else 0, k)
    a = g_mat[free][:, free]
    c0 = s.codebook.double().cpu()[free]
    lam = ridge * a.diagonal().clamp(min=1e-12)
    solved = torch.linalg.solve(a + torch.diag(lam), g_vec[free] + lam * c0)
    out = s.codebook.double().cpu().clone()
    out[free] = solved
    return out.float()


def _stages(model: nn.Module, names: list[str]) -> list[tuple[str | None, list[str]]]:
    """(stage, the target layers inside it) in network order. A network split into stages
    (``feature_names`` + ``forward_head``, as squeezelab's are) is calibrated a stage at a time on cached
    stage inputs, so the cost is a few forwards, not one per layer; any other model is one stage (None)."""
    if not (isinstance(getattr(model, "feature_names", None), tuple) and hasattr(model, "forward_head")):
        return [(None, names)]
    modules, plan, seen = dict(model.named_modules()), [], set()
    for stage in model.feature_names:
        inside = {id(m) for m in getattr(model, stage).modules()}
        plan.append((stage, [n for n in names if id(modules[n]) in inside]))
        seen.update(plan[-1][1])
    plan.append(("forward_head", [n for n in names if n not in seen]))
    return plan


def _stage(model: nn.Module, stage):
    return model if stage is None else getattr(model, stage)


def _gptq_codes(s, target: torch.Tensor, cxx: torch.Tensor, damp: float = 0.01,
                penalty: torch.Tensor | None = None) -> torch.Tensor:
    """Codes for ``target`` (out x d) on the fixed codebook of ``s`` chosen as GPTQ does (Frantar et
    al. 2023): columns in order of decreasing input energy, each weight rounded to its nearest code and
    its error, scaled by the inverse Hessian's Cholesky factor, pushed onto the columns not yet rounded,
    so the layer's OUTPUT error (weighted by Cxx) is what the rounding minimises. Pruned weights (zero
    in ``target``, or already code 0 in ``s``) stay the exact zero; their error moves on like any other.
    ``penalty`` (per code, in squared weight units: ECQ's rate price x the code's bits) makes the rounding
    entropy-constrained: a weight goes to the code with the least (w - c_j)^2 + penalty_j x u_ii^2 /
    mean(u^2), GPTQ's output-loss units, so rare codes stay dear as ECQ made them. With a penalty, the
    pruned zero (code 0) is a candidate for kept weights too unless its penalty is +inf
    (``ecq.code_price``'s ``zeros``)."""
    w = target.reshape(target.shape[0], -1).double().cpu().clone()
    # pruned: zero in the target, or code 0 (the zero) in ``s`` after a pruning step of this recipe, whose
    # removed weights then pass their error on to the rest as SparseGPT does
    pruned = (w == 0) | ((s.codes.reshape(w.shape).cpu() == 0) if s.zero else torch.zeros_like(w, dtype=torch.bool))
    d = w.shape[1]
    h = cxx.clone()
    dead = h.diagonal() <= 0
    h[dead, dead] = 1.0
    h += damp * h.diagonal().mean() * torch.eye(d, dtype=h.dtype)
    order = torch.argsort(h.diagonal(), descending=True)
    h, w, pruned = h[order][:, order], w[:, order], pruned[:, order]
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    book = s.codebook.double().cpu()
    first = 1 if s.zero else 0
    values, rank = torch.sort(book[first:])
    mids = (values[1:] + values[:-1]) / 2
    codes = torch.zeros_like(w, dtype=torch.int64)
    if penalty is not None:
        pen = penalty.double().cpu()
        scale = u.diagonal() ** 2 / (u.diagonal() ** 2).mean()
    for i in range(d):
        col = w[:, i]
        if penalty is None:
            c = first + rank[torch.bucketize(col.contiguous(), mids)]
        else:
            c = ((col[:, None] - book[None, :]) ** 2 + pen[None, :] * scale[i]).argmin(1)
        if s.zero:
            c = torch.where(pruned[:, i], torch.zeros_like(c), c)
        codes[:, i] = c
        err = (col - book[c]) / u[i, i]
        w[:, i + 1:] -= err[:, None] * u[i, i + 1:][None, :]
    out = torch.empty_like(codes)
    out[:, order] = codes
    return out.view(target.shape).to(s.codes.device)


def solve_layer(s, target: torch.Tensor, moments, ridge: float = 1e-3, codes: bool = True,
                penalty: torch.Tensor | None = None):
    """One layer's step of ``reconstruct_`` from its input / output moments (``_Moments.solved()``): the
    ``target`` weights GPTQ-rounded onto the codebook of ``s`` (``codes``; ``penalty`` as _gptq_codes),
    then the codebook and the bias solved by least squares. -> (new Shared, weight, bias float64)."""
    cxx, cxt, mx, mt = moments
    if codes:  # GPTQ rounding of the original weights onto the codebook, then the codebook re-solved
        s = dataclasses.replace(s, codes=_gptq_codes(s, target, cxx, penalty=penalty))
    codebook = _codebook_lsq(s, cxx, cxt, ridge)
    weight = codebook[s.codes.cpu()]
    bias = mt - weight.reshape(weight.shape[0], -1).double() @ mx
    return dataclasses.replace(s, codebook=codebook.to(s.codebook.device)), weight, bias


@torch.no_grad()
def reconstruct_(model: nn.Module, original: nn.Module, shared: dict, data, images: int, seed: int,
                 where: str = "share", ridge: float = 1e-3, codes: bool = False,
                 penalties: dict | None = None) -> dict:
    """Layer-wise output reconstruction of codebooks and biases (the least-squares step of GPTQ /
    AdaRound-style post-training quantisation, with the codes held fixed): layer by layer in network
    order, each shared layer's codebook and bias are solved in closed form so that, on the calibration
    images, its outputs given the quantised network's own inputs match the ORIGINAL network's outputs at
    that layer (so each layer also absorbs the error of the layers before it). Subsumes bias correction.
    ``model`` already holds ``shared`` (plain weights); -> the shared layers with their new codebooks.
    ``codes``: re-round the weights first (GPTQ); ``penalties``: {layer: per-code rate penalty} for it."""
    device = next(model.parameters()).device
    xs_q = xs_o = _calibration(data, images, seed, device, where)
    modules, originals = dict(model.named_modules()), dict(original.named_modules())
    was_training = model.training
    model.eval()
    original.eval()
    out = dict(shared)
    for stage, names in _stages(model, [n for n in modules if n in shared]):
        run_q, run_o = _stage(model, stage), _stage(original, stage)
        for name in names:
            layer = modules[name]
            moments = _Moments()
            for xq, xo in zip(xs_q, xs_o):
                moments.add(_rows(layer, _captured(run_q, layer, xq, output=False)),
                            _out_rows(_captured(run_o, originals[name], xo, output=True)))
            out[name], weight, bias = solve_layer(shared[name], originals[name].weight.detach(), moments.solved(),
                                                  ridge, codes, (penalties or {}).get(name))
            layer.weight.copy_(weight.to(layer.weight))
            if getattr(layer, "bias", None) is not None:
                layer.bias.copy_(bias.to(layer.bias))
        if stage is not None and stage != "forward_head":
            xs_q, xs_o = [run_q(x) for x in xs_q], [run_o(x) for x in xs_o]
    model.train(was_training)
    return out
