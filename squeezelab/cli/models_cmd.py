"""``squeezelab models`` (every registered model with its size and FLOPs) and ``squeezelab info MODEL``
(a per-layer table in the shape of paper Table 1, with totals; ``--memory``: what a device needs to run it).

Models are built on the ``meta`` device: complexity is measured from the real modules and a real
forward pass, but no memory is allocated and no weights are initialised, so both commands take
well under a second per model on a CPU.
"""

from __future__ import annotations

import json

from squeezelab.cli import args as argtypes

_TABLE_COLS = (("layer", "layer", 12), ("output_size", "output size", 15), ("filter", "filter/stride", 15),
               ("s1x1", "s1x1", 6), ("e1x1", "e1x1", 6), ("e3x3", "e3x3", 6), ("params", "params", 12),
               ("flops", "MFLOPs", 10))


def register(subparsers) -> None:
    p = subparsers.add_parser("models", help="list every model with parameters, fp32 size and FLOPs",
                              description="List every registered model: parameters, fp32 size and FLOPs "
                                          "(2 x multiply-adds) at its default input size, 1000 classes.")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(func=run_models)

    p = subparsers.add_parser("info", help="per-layer table of one model (paper Table 1 shape)",
                              description="Per-layer table (output size, filter, s1x1/e1x1/e3x3, params, "
                                          "FLOPs) and totals of one model, measured from the built model.")
    p.add_argument("model", help="a registered model name (see `squeezelab models`)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a model option, e.g. --set sr=0.5 --set bypass=simple (repeatable)")
    p.add_argument("--num-classes", type=argtypes.COUNT, default=1000, help="classifier outputs (default 1000)")
    p.add_argument("--input-size", type=argtypes.COUNT, default=None, help="input side in px (default: the model's)")
    p.add_argument("--memory", action="store_true",
                   help="also what a device needs: weight bytes, peak activations and a static runtime's arena "
                        "(int8 and fp32, batch 1), and whether it fits a 512 KB SRAM / 2 MB flash microcontroller")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run_info)


def _measure(name: str, num_classes: int, options: dict, input_size: int | None, layers: bool) -> dict:
    import torch

    from squeezelab import complexity
    from squeezelab.errors import ConfigError
    from squeezelab.models import create_model, get_model_entry

    entry = get_model_entry(name)
    size = input_size or entry.default_input_size
    if size < 1:
        raise ConfigError(f"--input-size must be >= 1; got {size}")
    with torch.device("meta"):
        model = create_model(name, num_classes=num_classes, **options)
    try:
        table = complexity.layer_table(model, size) if layers else None
        flops = complexity.count_flops(model, size)
    except RuntimeError as err:  # a pool or conv that gets an input smaller than its kernel
        raise ConfigError(f"{name} cannot take {size}x{size} px input ({str(err).splitlines()[0]}); "
                          f"try a larger --input-size or --set stem=small") from None
    out = {"name": name, "description": entry.description, "num_classes": num_classes, "input_size": size,
           "options": model.model_spec["options"], "params": complexity.count_params(model),
           "size_bytes": complexity.size_bytes(model), **flops}
    if layers:
        out["layers"] = table
    return out


def run_models(args) -> int:
    from squeezelab.models import list_models

    rows = [_measure(name, 1000, {}, None, layers=False) for name in list_models()]
    if args.json:
        keys = ("name", "params", "size_bytes", "flops", "macs", "input_size", "description")
        print(json.dumps([{k: r[k] for k in keys} for r in rows], indent=2))
        return 0
    print(f"{'model':<15}{'params':>12}{'fp32 MB':>10}{'GFLOPs':>9}{'GMACs':>8}{'input':>7}  description")
    for r in rows:
        print(f"{r['name']:<15}{r['params']:>12,}{r['size_bytes'] / 1e6:>10.2f}{r['flops'] / 1e9:>9.3f}"
              f"{r['macs'] / 1e9:>8.3f}{r['input_size']:>7}  {r['description']}")
    print("FLOPs = 2 x multiply-adds of convs and linears (torch FlopCounterMode), 1000 classes; "
          "see `squeezelab info MODEL`.")
    return 0


def run_info(args) -> int:
    from squeezelab.config import parse_set_args

    info = _measure(args.model, args.num_classes, parse_set_args(args.set), args.input_size, layers=True)
    if args.memory:
        info["memory"] = _memory(args.model, args.num_classes, parse_set_args(args.set), info["input_size"])
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['name']}: {info['description']}")
    changed = {k: v for k, v in info["options"].items() if v not in (None, [])}
    print("options: " + ", ".join(f"{k}={v}" for k, v in changed.items()))
    print("".join(f"{title:>{w}}" if i else f"{title:<{w}}" for i, (_, title, w) in enumerate(_TABLE_COLS)))
    for row in info["layers"]:
        cells = [_cell(key, row[key]) for key, _, _ in _TABLE_COLS]
        print("".join(f"{c:>{w}}" if i else f"{c:<{w}}" for i, (c, (_, _, w)) in enumerate(zip(cells, _TABLE_COLS))))
    print(f"total: {info['params']:,} parameters, {info['size_bytes']:,} bytes fp32, "
          f"{info['flops'] / 1e6:,.1f} MFLOPs ({info['macs'] / 1e6:,.1f} M multiply-adds) "
          f"at {info['input_size']}x{info['input_size']} px, {info['num_classes']} classes")
    for m in info.get("memory", []):
        print(f"{m['dtype']}: weights {m['weights_bytes']:,} B, peak activations {m['peak_bytes']:,} B "
              f"({m['largest']}), arena {m['arena_bytes']:,} B; fits {MCU[0] // 1024} KB SRAM + "
              f"{MCU[1] // 2**20} MB flash: {'yes' if m['fits_mcu'] else 'no'}")
    return 0


MCU = (512 * 1024, 2 * 2**20)  # SRAM, flash of the microcontroller the table asks about (bytes)


def _memory(name: str, num_classes: int, options: dict, size: int) -> list[dict]:
    """Batch-1 memory a device needs, int8 and fp32 (squeezelab.deploy.memory)."""
    import dataclasses

    import torch

    from squeezelab.deploy import memory
    from squeezelab.models import create_model

    with torch.device("meta"):
        model = create_model(name, num_classes=num_classes, **options)
    rows = []
    for dtype in ("int8", "fp32"):
        m = memory.measure(model, size, dtype)
        rows.append(dataclasses.asdict(m) | {"fits_mcu": m.fits(*MCU)})
    return rows


def _cell(key: str, value) -> str:
    if value is None:
        return ""
    if key == "params":
        return f"{value:,}"
    if key == "flops":
        return f"{value / 1e6:.1f}"
    return str(value)
