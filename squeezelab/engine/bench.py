"""``bench_train``: training images/second of our pipeline vs a naive one, same model, same machine.

- ours: the split as one in-memory uint8 tensor -> TensorLoader (batched slicing on the device) ->
  the preset's batched augmentation -> autocast (bf16 where ``resolve_amp`` picks it) and
  channels_last (where ``resolve_channels_last`` picks it).
- naive (the torchvision tutorial way): a Dataset of PIL images -> per-sample transforms
  (resize, pad-and-random-crop, flip, ToTensor, Normalize) -> torch DataLoader -> eager fp32 NCHW.
- network: ours without the data: the same model and settings stepping on one batch already on the
  device, the ceiling any input pipeline could reach (ours / network says how close ours gets).

All run SGD steps (after warm-up steps), alternating in rounds; ours and naive include data loading.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from squeezelab import runtime
from squeezelab.errors import ConfigError

WARMUP_STEPS = 3


def bench_train(model: str, dataset: str, *, data_dir: str | None = None, preset: str | None = None,
                options: dict | None = None, batch_size: int = 128, steps: int = 20, device: str = "auto",
                amp: str = "auto", channels_last: str = "auto", workers: int | None = None,
                rounds: int = 3, download: bool = False, compile: bool = False) -> dict:
    """-> {"ours": {...}, "naive": {...}, "network": {...}, "ratio": ours/naive, ...} with
    images_per_second each. ``compile``: torch.compile our model (ours and network; naive stays eager).

    The pipelines run alternately in ``rounds`` chunks of steps/rounds steps and each reports its
    median chunk throughput, so all see the same background load on a shared machine. ``ratio_range``:
    the lowest and highest ours/naive of single rounds, which shows how noisy the machine was."""
    from squeezelab.data import default_preset_for, get_preset, load_dataset

    if rounds < 1 or steps < rounds:
        raise ConfigError(f"--rounds must be >= 1 and at most --steps ({steps}), got {rounds}")
    dev = runtime.choose_device(device, where="--device")
    preset = get_preset(preset or default_preset_for(dataset))
    data = load_dataset(dataset, data_dir, "train", preset=preset.name, download=download)
    dtype, cl = runtime.resolve_amp(amp, dev), runtime.resolve_channels_last(channels_last, dev)
    # A fair peer gets the host's cores, as torchvision's reference scripts give their DataLoader (with 2
    # workers on a 16-core H100 host the naive pipeline ran 7.2k img/s, with 16 26.7k: issue 13).
    workers = runtime.available_cores() if workers is None else workers
    pipelines = {"ours": _ours(model, options or {}, data, preset, dev, batch_size, dtype, cl, compile),
                 "naive": _naive(model, options or {}, data, preset, dev, batch_size, workers),
                 "network": _network(model, options or {}, data, preset, dev, batch_size, dtype, cl, compile)}
    chunk = steps // rounds
    results = {name: [] for name in pipelines}
    for batches, step, _ in pipelines.values():
        for _ in range(WARMUP_STEPS):
            step(*next(batches))
    for _ in range(rounds):
        for name, (batches, step, _) in pipelines.items():
            results[name].append(_timed(batches, step, chunk, batch_size, dev))
    ips = {k: statistics.median(v) for k, v in results.items()}
    out = {name: {"images_per_second": ips[name], "settings": pipelines[name][2], "rounds": results[name]}
           for name in pipelines}
    per_round = [o / n for o, n in zip(results["ours"], results["naive"])]
    return {**out, "ratio": ips["ours"] / ips["naive"], "ratio_range": [min(per_round), max(per_round)],
            "ours_of_network": ips["ours"] / ips["network"],
            "device": str(dev), "device_name": runtime.device_name(dev), "model": model, "dataset": dataset,
            "input_size": preset.input_size, "batch_size": batch_size, "steps": chunk * rounds,
            "torch_threads": torch.get_num_threads()}


def bench_model(name: str, options: dict, num_classes: int, dev: torch.device, cl: bool) -> nn.Module:
    from squeezelab.models import create_model

    torch.manual_seed(0)
    m = create_model(name, num_classes=num_classes, **options).to(dev).train()
    return m.to(memory_format=torch.channels_last) if cl else m


def _our_step(name, options, data, dev, dtype, cl, compile):
    model = bench_model(name, options, data.num_classes, dev, cl)
    return sgd_step(torch.compile(model) if compile else model, dev, dtype)


def _timed(batches, step, n_steps: int, batch_size: int, dev: torch.device) -> float:
    """Images/second over ``n_steps`` steps; ``batches`` yields forever."""
    _sync(dev)
    t = time.perf_counter()
    for _ in range(n_steps):
        step(*next(batches))
    _sync(dev)
    return n_steps * batch_size / (time.perf_counter() - t)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _forever(make_iter):
    while True:
        yield from make_iter()


def sgd_step(model: nn.Module, dev: torch.device, dtype: torch.dtype | None):
    from squeezelab.engine.loop import StepOptions, backward_and_step

    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler(dev.type) if runtime.needs_grad_scaler(dtype) else None
    opts = StepOptions(amp_dtype=dtype, scaler=scaler)  # the trainer's own backward/step (fp16: scaled)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        backward_and_step(model, opt, loss, opts)

    return step


def _ours(name, options, data, preset, dev, batch_size, dtype, cl, compile):
    """-> (batches, step, settings) of our pipeline."""
    from squeezelab.data import TensorLoader

    inner = _our_step(name, options, data, dev, dtype, cl, compile)
    loader = TensorLoader(data.images, data.labels, batch_size, shuffle=True, drop_last=True, device=dev, seed=0)
    gen = torch.Generator(dev).manual_seed(0)

    def step(x, y):
        x = preset.train(x, generator=gen)
        inner(x.contiguous(memory_format=torch.channels_last) if cl else x, y)

    settings = (f"TensorLoader + batched {preset.name} preset, amp {dtype or 'off'}, channels_last {cl}"
                + (", torch.compile" if compile else ""))
    return _forever(lambda: iter(loader)), step, settings


def _network(name, options, data, preset, dev, batch_size, dtype, cl, compile):
    """-> (batches, step, settings): our model and settings on one fixed, already prepared batch."""
    take = torch.arange(batch_size) % len(data.labels)
    x = preset.train(data.images[take].to(dev), generator=torch.Generator(dev).manual_seed(0))
    x = x.contiguous(memory_format=torch.channels_last) if cl else x
    y = data.labels[take].to(dev)
    step = _our_step(name, options, data, dev, dtype, cl, compile)
    return _forever(lambda: iter([(x, y)])), step, "network step alone (one prepared batch on the device)"


def _naive(name, options, data, preset, dev, batch_size, workers):
    """-> (batches, step, settings) of the torchvision-tutorial pipeline."""
    inner = sgd_step(bench_model(name, options, data.num_classes, dev, cl=False), dev, None)
    loader = torch.utils.data.DataLoader(_PILDataset(data, preset), batch_size, shuffle=True, drop_last=True,
                                         num_workers=workers, persistent_workers=workers > 0)
    settings = f"PIL Dataset + per-sample transforms + DataLoader ({workers} workers), fp32 NCHW"
    return _forever(lambda: iter(loader)), (lambda x, y: inner(x.to(dev), y.to(dev))), settings


class _PILDataset(torch.utils.data.Dataset):
    """The split as PIL images with torchvision per-sample transforms approximating ``preset.train``."""

    def __init__(self, data, preset):
        import torchvision.transforms as T
        from torchvision.transforms.functional import to_pil_image

        self.images = [to_pil_image(img) for img in data.images]
        self.labels = data.labels.tolist()
        size = preset.input_size
        self.transform = T.Compose([T.Resize((size, size)), T.RandomCrop(size, padding=max(1, size // 8)),
                                    T.RandomHorizontalFlip(), T.ToTensor(),
                                    T.Normalize(preset.mean, preset.std)])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), self.labels[i]
