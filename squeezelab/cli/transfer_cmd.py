"""``squeezelab transfer``: pretrained weights -> a new dataset (frozen features, Sq-1/Fire-Next heads, full
fine-tuning, or the same network from scratch), each mode trained with the same budget."""

from __future__ import annotations

from squeezelab.cli import args as argtypes

MODES = ("linear", "sq1", "fire_next", "full", "scratch")


def register(subparsers) -> None:
    p = subparsers.add_parser("transfer", help="transfer pretrained weights to a dataset and report test accuracy",
                              description=__doc__.splitlines()[0].replace("``", ""))
    p.add_argument("--weights", required=True, help=argtypes.WEIGHTS_HELP)
    p.add_argument("--dataset", required=True, help="registered dataset name (e.g. cifar10)")
    p.add_argument("--data-dir", default=None, help="dataset folder as downloaded")
    p.add_argument("--download", action="store_true",
                   help="fetch the official archive into --data-dir if it is not there (needs network)")
    p.add_argument("--mode", nargs="+", default=["linear"], choices=MODES,
                   help="one or more modes; frozen ones share one pass of feature extraction")
    p.add_argument("--input-size", type=argtypes.COUNT, default=96, help="pixels per side the pretrained network sees")
    p.add_argument("--epochs", type=argtypes.COUNT, default=10)
    p.add_argument("--batch-size", type=argtypes.COUNT, default=64)
    p.add_argument("--lr", type=argtypes.POSITIVE, default=1e-3, help="AdamW peak lr of new layers (pretrained: lr/10)")
    p.add_argument("--seed", type=argtypes.SEED, default=0)
    p.add_argument("--threads", type=argtypes.THREADS, default=None, help="torch CPU threads")
    p.add_argument("--device", default="auto", help="auto (CUDA when present) | cpu | cuda | cuda:N")
    p.add_argument("--json", action="store_true", help="print one JSON object per mode")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    import torch

    from squeezelab.data import get_spec, load_dataset
    from squeezelab.weights import load_weights
    from squeezelab.jobs.transfer import TransferConfig, run_transfer

    if args.threads:
        torch.set_num_threads(args.threads)
    weights = load_weights(args.weights)
    train = load_dataset(args.dataset, args.data_dir, "train", download=args.download)
    test = load_dataset(args.dataset, args.data_dir, get_spec(args.dataset).heldout, download=args.download)
    cache: dict = {}
    for mode in args.mode:
        cfg = TransferConfig(mode=mode, input_size=args.input_size, epochs=args.epochs, batch_size=args.batch_size,
                             lr=args.lr, seed=args.seed, device=args.device)
        result = run_transfer(weights, train, test, cfg, feature_cache=cache)
        if args.json:
            print(json.dumps({"weights": str(args.weights), "dataset": args.dataset, **vars(cfg), **result}), flush=True)
        else:
            print(f"{mode:10s} top1 {100 * result['top1']:.2f}%  top5 {100 * result['top5']:.2f}%  "
                  f"features {result['feature_s']:.0f} s  train {result['train_s']:.0f} s", flush=True)
    return 0
