"""``squeezelab convert IN OUT``: weights between the authors' ``.net``, torchvision ``.pth``, our
checkpoints and our compressed ``.sqz``."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert", help="convert weights: .net / .pth / .safetensors / .sqz -> .safetensors, .sqz or .net",
        description="Convert weights. IN: a run folder, a squeezelab .safetensors checkpoint or .sqz file, the "
                    "Deep Compression .net file or a torchvision SqueezeNet .pth (recognised by content). "
                    "OUT: .safetensors (our checkpoint), .sqz (compressed; lossless unless --recipe prunes or "
                    "shares weights) or .net (weight-shared SqueezeNet v1.0 only).")
    p.add_argument("src", metavar="IN", help="weights to read")
    p.add_argument("dst", metavar="OUT", help="file to write; its extension picks the format")
    p.add_argument("--recipe", help="YAML with prune / share / code sections, applied without retraining "
                                    "(.sqz output; for retraining use squeezelab compress)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key: --set share.bits=6 --set code.coder=huffman (implies a recipe)")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from squeezelab.config import OneShotRecipe, config_from_dict, load_recipe, parse_set_args, apply_overrides
    from squeezelab.weights import convert_weights

    recipe = None
    if args.recipe:
        recipe = load_recipe(args.recipe, OneShotRecipe, args.set)
    elif args.set:
        recipe = config_from_dict(apply_overrides({}, parse_set_args(args.set)), OneShotRecipe)
    weights = convert_weights(args.src, args.dst, recipe)
    size = Path(args.dst).stat().st_size
    fp32 = 4 * sum(t.numel() for t in weights.state_dict.values())
    print(f"{args.src} ({weights.source}, {weights.model_name or 'unknown model'}) -> {args.dst} "
          f"({size:,} bytes; {fp32 / size:.1f}x smaller than fp32)")
    return 0
