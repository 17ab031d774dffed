"""``load_weights(path)``: one entry point for every weights file a user may hand to ``--weights``.

The format is recognised by content (magic bytes / header), not by the file name, so a renamed file
still loads and a corrupt one fails with one clear line. Each result carries what is needed to use
the weights correctly: the model to build, its options and the input preprocessing (``preset``) the
weights were trained with (the authors' Caffe weights want BGR 0..255 minus the mean, torchvision's
want RGB 0..1 normalised by the ImageNet mean/std).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch

from squeezelab.errors import WeightsError
from squeezelab.weights import deep_compression, sqz

ACCEPTED = ("a run folder, a squeezelab .safetensors checkpoint or .sqz file, the Deep Compression .net file "
            "(compressed_SqueezeNet.net) or a torchvision SqueezeNet .pth state dict")
CAFFE_PRESET = "caffe"  # 227x227 BGR, 0..255 minus (104, 117, 123)
TORCHVISION_PRESET = "report004"  # RGB 0..1, ImageNet mean/std, resize 256 + centre crop 224
RUN_CHECKPOINTS = ("best.safetensors", "last.safetensors")


@dataclass(frozen=True)
class LoadedWeights:
    """A state dict under our keys plus what it takes to use it."""

    state_dict: dict[str, torch.Tensor]
    source: str  # "deep-compression" | "squeezelab" | "torchvision"
    model_name: str | None = None
    model_options: dict = field(default_factory=dict)
    num_classes: int | None = None
    preset: str | None = None
    path: Path | None = None
    # How a squeezelab run split its dataset ({"dataset", "split_scheme", "val_fraction", "seed"}), so that
    # `eval` scores a pooled-split run (report 003) on its own held-out images, not on training images.
    data_split: dict | None = None
    classes: list[str] | None = None  # class names in output order, when the file knows them
    header: dict | None = None  # a .sqz file's JSON header (provenance, ...)

    @property
    def model_spec(self) -> dict | None:
        """``{"name", "num_classes", "options"}`` for ``create_model``, when the file says."""
        if self.model_name is None:
            return None
        return {"name": self.model_name, "num_classes": self.num_classes, "options": dict(self.model_options)}


def load_weights(path: str | Path) -> LoadedWeights:
    """Read any accepted weights file (see ``ACCEPTED``); anything else raises WeightsError."""
    path = Path(path)
    if path.is_dir():
        path = _checkpoint_in_run(path)
    if not path.is_file():
        raise WeightsError(f"weights not found: {path} (expected {ACCEPTED})")
    loader = _LOADERS[sniff_format(path)]
    try:
        return loader(path)
    except WeightsError as err:
        raise WeightsError(str(err) if str(path) in str(err) else f"{path}: {err}") from None


def sniff_format(path: Path) -> str:
    """"safetensors" | "torch" | "deep-compression" | "sqz", from the first bytes; else WeightsError."""
    with open(path, "rb") as f:
        head = f.read(128)
    size = path.stat().st_size
    if sqz.looks_like_sqz(head) or path.suffix.lower() == ".sqz":  # named .sqz: report its damage as such
        return "sqz"
    if len(head) >= 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] + 8 <= size:
        return "safetensors"
    if head[:4] == b"PK\x03\x04":  # torch.save's zip format
        return "torch"
    if deep_compression.looks_like_deep_compression(head):  # before the pickle check: a count may start 0x80
        return "deep-compression"
    if head[:2] == b"\x80\x02":  # torch.save's legacy format: a protocol-2 pickle
        return "torch"
    if path.suffix.lower() == ".net":  # named like one: decode, so that corruption is reported as such
        return "deep-compression"
    what = "an empty file" if size == 0 else f"an unrecognised file ({size} bytes)"
    raise WeightsError(f"{path} is {what}; expected {ACCEPTED}")


def _checkpoint_in_run(run_dir: Path) -> Path:
    for name in RUN_CHECKPOINTS:
        if (run_dir / name).is_file():
            return run_dir / name
    raise WeightsError(f"no {' or '.join(RUN_CHECKPOINTS)} in run folder {run_dir} (expected {ACCEPTED})")


def _load_deep_compression(path: Path) -> LoadedWeights:
    state = deep_compression.decode(path.read_bytes())
    return LoadedWeights(state, "deep-compression", "squeezenet1_0", {"caffe": True}, 1000, CAFFE_PRESET, path)


def _load_safetensors(path: Path) -> LoadedWeights:
    from squeezelab.weights.checkpoint import read_checkpoint

    ckpt = read_checkpoint(path)
    meta = ckpt.meta if isinstance(ckpt.meta, dict) else {}
    model = _described(path, meta)
    return LoadedWeights(dict(ckpt.model_state), "squeezelab", model.get("name"), dict(model.get("options") or {}),
                         model.get("num_classes"), meta.get("preset"), path,
                         _split_checked(path, _data_split(meta.get("config"))), meta.get("classes"))


def _described(path: Path, meta: dict) -> dict:
    """The model description of a checkpoint or .sqz header, every field of the type squeezelab writes;
    a file whose header says otherwise (a list as preset, a string as num_classes) is one line."""
    model = meta.get("model", {})
    if model is not None and not isinstance(model, dict):
        raise WeightsError(f"{path}: its model is a {type(model).__name__}, not the dict squeezelab writes "
                           f"(a damaged or edited file)")
    checks = (("model.name", (model or {}).get("name"), str),
              ("model.options", (model or {}).get("options"), dict), ("preset", meta.get("preset"), str),
              ("dataset", meta.get("dataset"), str), ("classes", meta.get("classes"), list))
    for field_, value, kind in checks:
        if value is not None and not isinstance(value, kind):
            raise WeightsError(f"{path}: its {field_} is a {type(value).__name__}, not the {kind.__name__} squeezelab "
                               f"writes (a damaged or edited file)")
    n = (model or {}).get("num_classes")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 2**32):
        raise WeightsError(f"{path}: its model.num_classes is {n!r}, not a class count")
    classes = meta.get("classes")
    if classes is not None and not all(isinstance(c, str) for c in classes):
        raise WeightsError(f"{path}: its classes are not a list of names")
    return model or {}


def _load_sqz(path: Path) -> LoadedWeights:
    """A .sqz file: decode every tensor, then check that the model its header names has exactly these
    tensors (built on the meta device: a hostile header cannot make it allocate a giant model)."""
    f = sqz.read_sqz(path.read_bytes(), decode=False)  # the table only: nothing decoded yet
    header = f.header
    model = _described(path, header)
    name, options, num_classes = model.get("name"), model.get("options") or {}, model.get("num_classes")
    if name is not None:  # every tensor's shape checked against the model the header names, then decoded
        _check_spec_fits(name, options, num_classes, {t.name: t.shape for t in f.tensors})
    state = f.state_dict()
    classes = header.get("classes") if isinstance(header.get("classes"), list) else None
    data = _split_checked(path, header.get("data_split"))
    return LoadedWeights(state, "sqz", name, dict(options), num_classes, header.get("preset"), path, data,
                         classes, header)


def _split_checked(path: Path, split) -> dict | None:
    """How the weights' run split its data, each field of its type (a string as val_fraction was read
    silently, then failed inside eval): else one line."""
    if split is None:
        return None
    num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    ok = (isinstance(split, dict) and isinstance(split.get("dataset"), (str, type(None)))
          and split.get("split_scheme", "official") in ("official", "pooled")
          and num(split.get("val_fraction", 0.0)) and 0 <= split.get("val_fraction", 0.0) < 1
          and isinstance(split.get("seed", 0), int) and not isinstance(split.get("seed", 0), bool))
    if not ok:
        raise WeightsError(f"{path}: its data_split is not the {{dataset, split_scheme, val_fraction, seed}} "
                           f"squeezelab writes (a damaged or edited file)")
    return split


def _check_spec_fits(name, options, num_classes, shapes: dict[str, tuple]) -> None:
    from squeezelab.errors import SqueezelabError
    from squeezelab.models import create_model

    if not isinstance(options, dict) or not isinstance(num_classes, int) or isinstance(num_classes, bool):
        raise WeightsError("corrupt .sqz header: model options / num_classes malformed")
    try:
        with torch.device("meta"):
            own = create_model(name, num_classes=num_classes, **options).state_dict()
    except SqueezelabError as err:
        raise WeightsError(f"its header names a model this squeezelab cannot build ({err})") from None
    except (TypeError, ValueError, RuntimeError) as err:
        raise WeightsError(f"its header names a model this squeezelab cannot build ({type(err).__name__})") from None
    wrong = [k for k in own if k not in shapes or tuple(shapes[k]) != tuple(own[k].shape)]
    extra = [k for k in shapes if k not in own]
    if wrong or extra:
        raise WeightsError(f"its tensors do not fit the {name} its header names "
                           f"({', '.join((wrong + extra)[:3])} ...)")


def _data_split(config: dict | None) -> dict | None:
    """The split settings of the run that wrote a checkpoint (None for files without a run config)."""
    if not isinstance(config, dict):
        return None
    data, train = config.get("data") or {}, config.get("train") or {}
    if not isinstance(data, dict) or not isinstance(train, dict):
        return {"dataset": None, "val_fraction": "not a config"}  # refused by _split_checked
    return {"dataset": data.get("dataset"), "split_scheme": data.get("split_scheme", "official"),
            "val_fraction": data.get("val_fraction", 0.0), "seed": train.get("seed", 0)}


def _load_torch(path: Path) -> LoadedWeights:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a corrupt/unsafe pickle
        raise WeightsError(f"cannot read as a torch state dict ({type(err).__name__}: "
                           f"{str(err).splitlines()[0] if str(err) else ''})") from None
    state = _unwrap_state_dict(obj)
    if "features.0.weight" in state:
        return _from_torchvision(state, path)
    if "conv1.weight" in state:
        return LoadedWeights(state, "squeezelab", None, {}, None, None, path)
    raise WeightsError(f"a torch state dict, but not of a SqueezeNet (first keys: {', '.join(list(state)[:3])})")


def _unwrap_state_dict(obj) -> dict[str, torch.Tensor]:
    """Accept a bare state dict or the usual ``{"state_dict": ...}`` / ``{"model": ...}`` wrappers."""
    for key in ("state_dict", "model_state", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError("a torch file, but not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _from_torchvision(state: dict[str, torch.Tensor], path: Path) -> LoadedWeights:
    """torchvision ``features.N`` / ``classifier.1`` keys -> ours, via the models' key map."""
    from squeezelab.models import from_torchvision_state_dict

    first = tuple(state["features.0.weight"].shape)
    names = {(96, 3, 7, 7): "squeezenet1_0", (64, 3, 3, 3): "squeezenet1_1"}
    if first not in names or "classifier.1.weight" not in state:
        raise WeightsError(f"a torchvision-style state dict, but not of SqueezeNet 1.0/1.1 (features.0 {first})")
    name = names[first]
    ours = from_torchvision_state_dict(state, name)
    num_classes = int(state["classifier.1.weight"].shape[0])
    return LoadedWeights(ours, "torchvision", name, {}, num_classes, TORCHVISION_PRESET, path)


_LOADERS = {"deep-compression": _load_deep_compression, "safetensors": _load_safetensors, "torch": _load_torch,
            "sqz": _load_sqz}


def load_into(model: torch.nn.Module, weights: LoadedWeights | dict[str, torch.Tensor]) -> torch.nn.Module:
    """Copy weights into ``model`` after checking every name and shape; mismatch -> WeightsError."""
    state = weights.state_dict if isinstance(weights, LoadedWeights) else weights
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        raise WeightsError(_mismatch_message(own, state, missing, unexpected, wrong))
    _check_finite(state, getattr(weights, "path", None))
    model.load_state_dict(state, strict=True)
    return model


def _check_finite(state: dict[str, torch.Tensor], path) -> None:
    """NaN / inf weights (a diverged run saved by another tool, a corrupt file) would score 0% with no
    word: refuse them, naming the first tensor."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        where = f"{path}: " if path else ""
        raise WeightsError(f"{where}{len(bad)} of {len(state)} tensors hold NaN or inf values (first: {bad[0]}); "
                           f"these weights come from a diverged run or a damaged file")


def _mismatch_message(own, state, missing, unexpected, wrong) -> str:
    def few(keys):
        return ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")

    parts = []
    if wrong:
        k = wrong[0]
        parts.append(f"shape mismatch for {few(wrong)}: weights {tuple(state[k].shape)}, model {tuple(own[k].shape)}")
    if missing:
        parts.append(f"missing in the weights: {few(missing)}")
    if unexpected:
        parts.append(f"not in the model: {few(unexpected)}")
    msg = "weights do not fit the model: " + "; ".join(parts)
    last = list(own)[-1] if own else None  # the classifier's bias: its length is the class count
    if not missing and not unexpected and last in wrong and state[last].ndim == 1:
        n = state[last].shape[0]
        msg += (f". The weights have {n} classes and the model {own[last].shape[0]}: build the model "
                f"with --num-classes {n}, or load into a {n}-class model and then call reset_classifier")
    return msg
