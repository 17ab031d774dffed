"""``squeezelab convert IN OUT``: weights between the authors' ``.net``, torchvision ``.pth`` and our checkpoints."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert", help="convert weights: .net / .pth / .safetensors -> .safetensors or .net",
        description="Convert weights. IN: a run folder, a squeezelab .safetensors checkpoint, the Deep "
                    "Compression .net file or a torchvision SqueezeNet .pth (recognised by content). "
                    "OUT: .safetensors (our checkpoint) or .net (weight-shared SqueezeNet v1.0 only).")
    p.add_argument("src", metavar="IN", help="weights to read")
    p.add_argument("dst", metavar="OUT", help="file to write; its extension picks the format")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from squeezelab.weights import convert_weights

    weights = convert_weights(args.src, args.dst)
    size = Path(args.dst).stat().st_size
    print(f"{args.src} ({weights.source}, {weights.model_name or 'unknown model'}) -> {args.dst} ({size:,} bytes)")
    return 0
