"""``squeezelab train``, ``squeezelab eval`` and ``squeezelab bench train``.

    squeezelab train configs/cifar10_small_best.yaml --set optim.lr=0.1 --set train.epochs=5
    squeezelab train --resume runs/20260122-153012-squeezenet1_1-cifar10-a1b2c3
    torchrun --nproc_per_node 8 -m squeezelab train configs/...yaml        # DDP, same command
    squeezelab eval --weights runs/<id> --dataset cifar10 --data-dir ~/data --json
    squeezelab bench train --model squeezenet1_1 --dataset digits
"""

from __future__ import annotations

import json
from pathlib import Path

from squeezelab.cli import args as argtypes
from squeezelab.config import AMP_CHOICES


def register(subparsers) -> None:
    _register_train(subparsers)
    _register_eval(subparsers)
    _register_bench(subparsers)


# ------------------------------------------------------------------------------------------ train


def _register_train(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a model from a YAML recipe (configs/*.yaml)",
                              description="Train from a YAML config; writes runs/<id>/ (config, metrics, checkpoints).")
    p.add_argument("config", nargs="?", help="YAML recipe (optional with --resume: the run's own config.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, repeatable: --set optim.lr=0.1 --set model.options.sr=0.25")
    p.add_argument("--run-dir", help="write the run here (must not hold files) instead of runs_dir/<id>")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar / periodic log lines")
    p.add_argument("--download", action="store_true",
                   help="fetch the official archive into data.data_dir if it is not there (needs network); "
                        "sets data.download=true")
    p.set_defaults(func=_train)


def _train(args) -> int:
    from squeezelab.config import load_config
    from squeezelab.errors import ConfigError

    overrides = list(args.set) + ([f"output.run_dir={args.run_dir}"] if args.run_dir else [])
    overrides += ["data.download=true"] if args.download else []
    if args.resume:
        resume = Path(args.resume)
        if not (resume / "config.yaml").is_file():
            raise ConfigError(f"--resume {resume}: not a run folder (no config.yaml)")
        cfg = load_config(args.config or resume / "config.yaml", overrides)
    elif args.config:
        cfg = load_config(args.config, overrides)
    else:
        raise ConfigError("train needs a CONFIG.yaml (or --resume RUN_DIR)")
    from squeezelab.engine import fit

    import os

    run_dir = fit(cfg, resume=args.resume, progress=not args.no_progress)
    if os.environ.get("RANK", "0") == "0":  # under torchrun only the first process reports
        print(run_dir)
    return 0


# ------------------------------------------------------------------------------------------- eval


def _register_eval(subparsers) -> None:
    p = subparsers.add_parser("eval", help="top-1 / top-5 / loss of weights on a dataset split",
                              description="Evaluate weights (a run folder, checkpoint, the authors' .net file "
                                          "or a torchvision .pth) on a dataset split.")
    p.add_argument("--weights", required=True, help=argtypes.WEIGHTS_HELP)
    p.add_argument("--model", help="model name (default: the one the weights name)")
    p.add_argument("--dataset", required=True, help="registered dataset name (cifar10, tiny-imagenet, ...)")
    p.add_argument("--data-dir", help="dataset folder (not needed for digits)")
    p.add_argument("--download", action="store_true",
                   help="fetch the official archive into --data-dir if it is not there (needs network)")
    p.add_argument("--split", help="split to evaluate (default: the dataset's official held-out split)")
    p.add_argument("--class-map", help="class list (e.g. ImageNet's synset_words.txt) the dataset's labels are "
                                       "mapped onto by class id, for weights trained on other classes")
    p.add_argument("--preset", help="preprocessing preset (default: the weights', else the dataset's)")
    p.add_argument("--split-scheme", choices=["official", "pooled"],
                   help="official splits, or report 003's pooled train/val/test (default: as the weights' run)")
    p.add_argument("--val-fraction", type=argtypes.FRACTION, help="pooled scheme: val and test fraction each (default: the run's)")
    p.add_argument("--seed", type=argtypes.SEED, help="pooled scheme: split seed (default: the run's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra model option")
    p.add_argument("--batch-size", type=argtypes.COUNT, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default="off", choices=AMP_CHOICES,
                   help="precision (default off: fp32, the same scores on every machine; auto/bf16 trade "
                        "that for speed)")
    p.add_argument("--json", action="store_true", help='print {"top1", "top5", "n", "loss", "seconds"}')
    p.set_defaults(func=_eval)


def _eval(args) -> int:
    from squeezelab.engine.evaluation import evaluate_weights

    result = evaluate_weights(args.weights, args.dataset, data_dir=args.data_dir, split=args.split,
                              model=args.model, preset=args.preset, options=_options(args.set),
                              batch_size=args.batch_size, device=args.device, amp=args.amp,
                              split_scheme=args.split_scheme, val_fraction=args.val_fraction, seed=args.seed,
                              download=args.download, class_map=args.class_map)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['model']} on {result['dataset']}/{result['split']} ({result['n']} images, "
              f"preset {result['preset']}): top-1 {100 * result['top1']:.2f}%  top-5 {100 * result['top5']:.2f}%  "
              f"loss {result['loss']:.4f}  ({result['seconds']:.1f} s)")
    return 0


def _options(items: list[str]) -> dict:
    from squeezelab.config import parse_set_args

    return {k.removeprefix("model.options."): v for k, v in parse_set_args(items).items()}


# ------------------------------------------------------------------------------------------ bench


def _register_bench(subparsers) -> None:
    bench = subparsers.add_parser("bench", help="measure speed: training (ours vs naive) or inference engines",
                                  description="bench train: images/second of our training pipeline, a naive one and "
                                              "the network alone. bench infer: batch-1 latency and batch-32 "
                                              "throughput of torch, torch.compile and ONNX Runtime fp32/int8.")
    sub = bench.add_subparsers(dest="what", required=True, parser_class=type(bench))
    from squeezelab.cli.deploy_cmd import register_bench_infer

    register_bench_infer(sub)
    p = sub.add_parser("train", help="training images/second: our pipeline vs a naive one",
                       description="Images/second of our training pipeline and of a naive torchvision-style "
                                   "one on this machine, and their ratio.")
    p.add_argument("--model", default="squeezenet1_1")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir")
    p.add_argument("--download", action="store_true",
                   help="fetch the official archive into --data-dir if it is not there (needs network)")
    p.add_argument("--preset")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model option")
    p.add_argument("--batch-size", type=argtypes.COUNT, default=128)
    p.add_argument("--steps", type=argtypes.COUNT, default=20, help="timed steps per pipeline, split over the rounds")
    p.add_argument("--rounds", type=argtypes.COUNT, default=3,
                   help="alternating rounds (ours, naive, network, ours, ...); more on a noisy machine")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default="auto", choices=AMP_CHOICES)
    p.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"])
    p.add_argument("--workers", type=argtypes.integer(0, 256), default=None, help="naive DataLoader workers (default: the cores this process may use)")
    p.add_argument("--threads", type=argtypes.THREADS, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--compile", action="store_true", help="torch.compile our model (the naive one stays eager)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_bench)


def _bench(args) -> int:
    import torch

    from squeezelab.engine.bench import bench_train

    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads or threads)
    try:
        r = bench_train(args.model, args.dataset, data_dir=args.data_dir, preset=args.preset,
                        options=_options(args.set), batch_size=args.batch_size, steps=args.steps,
                        device=args.device, amp=args.amp, channels_last=args.channels_last, workers=args.workers,
                        rounds=args.rounds, download=args.download, compile=args.compile)
    finally:
        torch.set_num_threads(threads)
    if args.json:
        print(json.dumps(r))
    else:
        print(f"ours : {r['ours']['images_per_second']:.0f} img/s  ({r['ours']['settings']})")
        print(f"naive: {r['naive']['images_per_second']:.0f} img/s  ({r['naive']['settings']})")
        print(f"network alone: {r['network']['images_per_second']:.0f} img/s  (ours reaches "
              f"{100 * r['ours_of_network']:.0f}% of it)")
        lo, hi = r["ratio_range"]
        print(f"ratio: {r['ratio']:.2f}x, {lo:.2f}-{hi:.2f}x over the rounds  ({r['device_name']}, {r['model']}, "
              f"{r['dataset']}, {r['input_size']} px, batch {r['batch_size']}, {r['torch_threads']} threads)")
    return 0
