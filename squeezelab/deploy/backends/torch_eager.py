"""torch itself: any ``--weights`` file (checkpoint, .pth, .safetensors, .sqz, the authors' .net),
fp32 in eval mode. The reference every exported file is checked against, and three bench engines:
eager NCHW, eager channels_last and torch.compile."""

from __future__ import annotations

import numpy as np
import torch

from squeezelab.deploy.backends import Backend, Loaded, metadata, register

LAYOUTS = ("nchw", "channels-last", "compile")


def runner(net, layout: str = "nchw"):
    """float32 NCHW numpy batch -> logits, through ``net`` laid out / compiled as ``layout`` says."""
    channels_last = layout != "nchw"
    model = net.to(memory_format=torch.channels_last) if channels_last else net
    if layout == "compile":
        model = torch.compile(model)

    @torch.inference_mode()
    def run(x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(x, np.float32))
        return model(t.contiguous(memory_format=torch.channels_last) if channels_last else t).float().numpy()

    return run


class Torch(Backend):
    name, format = "torch", ""
    suffixes = (".pt", ".pth", ".safetensors", ".sqz", ".net", ".ckpt")
    packages = ("torch",)

    def load_here(self, path, *, threads=1, precision=None, model=None, layout="nchw"):
        from squeezelab.data import get_preset
        from squeezelab.deploy.graph import load_model

        torch.set_num_threads(threads)
        net, w, preset = load_model(str(path), model)
        return Loaded(self.name, "fp32", threads, runner(net, layout), metadata(w, get_preset(preset), net))


register(Torch())
