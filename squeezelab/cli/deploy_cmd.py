"""``squeezelab export`` (ONNX, optional int8), ``squeezelab predict`` and ``squeezelab bench infer``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from squeezelab.cli import args as argtypes


def register(subparsers) -> None:
    _register_export(subparsers)
    _register_predict(subparsers)


# ------------------------------------------------------------------------------------------ export


def _register_export(subparsers) -> None:
    p = subparsers.add_parser("export", help="export weights to ONNX (fp32, and int8 with --int8)",
                              description="Export any weights to one self-contained ONNX file (dynamic batch, "
                                          "BatchNorm folded, preset and class names in its metadata), check ONNX "
                                          "Runtime against torch, and optionally quantise it to int8 (static, QDQ, "
                                          "per-channel) calibrated on training images of the model's dataset.")
    p.add_argument("--weights", required=True, help=argtypes.WEIGHTS_HELP)
    p.add_argument("--model", help="model name (default: the one the weights name)")
    p.add_argument("-o", "--out", required=True, help="the .onnx file to write (int8: <out>.int8.onnx)")
    p.add_argument("--int8", action="store_true", help="also write an int8 model (needs --calib-dataset)")
    p.add_argument("--calib-dataset", help="dataset whose TRAINING images calibrate int8 (the model's own)")
    p.add_argument("--calib-data-dir")
    p.add_argument("--calib-n", type=argtypes.COUNT, default=300, help="calibration images (default 300)")
    p.add_argument("--calib-preset", help="preprocessing of the calibration images (default: the weights')")
    p.add_argument("--check-dataset", help="also score torch, ONNX fp32 (and int8) on this dataset's split")
    p.add_argument("--check-data-dir")
    p.add_argument("--check-split")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_export)


def _export(args) -> int:
    from squeezelab.deploy.export import export_onnx

    e = export_onnx(args.weights, args.out, model=args.model)
    result = {"onnx": str(e.path), "bytes": e.bytes, "max_abs_diff": e.max_abs_diff, "preset": e.preset}
    lines = [f"{args.weights} -> {e.path} ({e.bytes:,} bytes); ONNX Runtime vs torch: max |diff| of the logits "
             f"{e.max_abs_diff:.2e}"]
    int8 = None
    if args.int8:
        int8 = _int8(args, e)
        result["int8"] = {"onnx": str(int8), "bytes": int8.stat().st_size}
        lines.append(f"int8: {int8} ({int8.stat().st_size:,} bytes, {e.bytes / int8.stat().st_size:.1f}x smaller)")
    if args.check_dataset:
        result["check"] = _check(args, e.path, int8)
        lines += [f"{k}: top-1 {100 * v['top1']:.2f}% ({v.get('correct', '')}/{v['n']})" +
                  (f", same top-1 as the row above on {100 * v['agreement']:.1f}% of the images" if "agreement" in v else "")
                  for k, v in result["check"].items()]
    print(json.dumps(result) if args.json else "\n".join(lines))
    return 0


def _int8(args, exported) -> Path:
    from squeezelab.deploy.quantize import calibration_batch, quantize_int8
    from squeezelab.errors import ConfigError

    if not args.calib_dataset:
        raise ConfigError("--int8 needs --calib-dataset (training images of the model's own dataset)")
    calib = calibration_batch(args.calib_dataset, args.calib_data_dir, args.calib_preset or exported.preset,
                              args.calib_n)
    out = exported.path.with_suffix(".int8.onnx")
    return quantize_int8(exported.path, out, calib)


def _check(args, fp32: Path, int8: Path | None) -> dict:
    """Top-1/top-5 of torch, ONNX fp32 (and int8) on the same images, and how often their top-1 agree
    (ONNX fp32 with torch, int8 with ONNX fp32)."""
    from squeezelab.deploy.accuracy import onnx_accuracy, torch_accuracy

    out = {"torch": torch_accuracy(args.weights, args.check_dataset, args.check_data_dir, args.check_split,
                                   model=args.model)}
    previous = out["torch"].pop("predictions")
    for name, path in (("onnx-fp32", fp32), ("onnx-int8", int8)):
        if path is None:
            continue
        r = onnx_accuracy(path, args.check_dataset, args.check_data_dir, args.check_split)
        preds = r.pop("predictions")
        r["agreement"] = float((preds == previous).float().mean())
        previous = preds
        out[name] = r
    return out


# ------------------------------------------------------------------------------------------ predict


def _register_predict(subparsers) -> None:
    p = subparsers.add_parser("predict", help="top-5 classes of images, with the weights' preprocessing",
                              description="Predict the classes of image files (or folders of them) with any "
                                          "weights (torch) or an exported ONNX file. Unreadable images get one "
                                          "line each on stderr; the others are still predicted.")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--weights", help=argtypes.WEIGHTS_HELP)
    p.add_argument("--onnx", help="an ONNX file exported by squeezelab export")
    p.add_argument("--classes", help="class names, one per line (ImageNet's synset_words.txt works as is)")
    p.add_argument("--top", type=argtypes.COUNT, default=5)
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.set_defaults(func=_predict)


def _predict(args) -> int:
    from squeezelab.deploy.predict import Predictor, image_paths, load_image, read_class_names
    from squeezelab.errors import ConfigError, DataError
    from squeezelab.runtime import printable

    if args.top < 1:
        raise ConfigError(f"--top must be >= 1, got {args.top}")
    predictor = Predictor(args.weights, args.onnx, read_class_names(args.classes) if args.classes else None)
    failed = 0
    for path in image_paths(args.images):
        try:
            top = predictor.top(load_image(path), args.top)
        except DataError as err:  # this image only: the others are still predicted
            msg = str(err) if str(path) in str(err) else f"{path}: {err}"
            print(f"squeezelab predict: {printable(msg)}", file=sys.stderr)
            failed += 1
            continue
        if args.json:  # json.dumps escapes control characters itself
            print(json.dumps({"image": str(path), "top": [{"class": i, "name": n, "p": p} for i, n, p in top]}))
        else:  # names come from files (a .sqz, --classes): never let them write escape sequences
            print(printable(f"{path}: " + "; ".join(f"{n} {100 * p:.1f}%" for _, n, p in top)))
    return 2 if failed else 0


# ------------------------------------------------------------------------------------------ bench infer


def register_bench_infer(sub) -> None:
    p = sub.add_parser("infer", help="inference latency/throughput: torch, torch.compile, ONNX Runtime fp32/int8",
                       description="Batch-1 latency (median, p90) and batch-32 throughput of the same weights in "
                                   "torch eager (NCHW, channels_last), torch.compile and ONNX Runtime fp32 / int8, "
                                   "with 1 and 2 threads, in alternating rounds.")
    p.add_argument("--weights", required=True, help=argtypes.WEIGHTS_HELP)
    p.add_argument("--onnx", help="the fp32 ONNX file of these weights (default: exported to a temp folder)")
    p.add_argument("--int8", help="its int8 ONNX file (default: none; export --int8 makes one)")
    p.add_argument("--threads", type=argtypes.THREADS, nargs="+", default=[1, 2])
    p.add_argument("--engines", nargs="+", default=None, help="subset of engines")
    p.add_argument("--rounds", type=argtypes.COUNT, default=5)
    p.add_argument("--iters", type=argtypes.COUNT, default=20, help="batch-1 calls per engine per round")
    p.add_argument("--batch", type=argtypes.COUNT, default=32)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_bench_infer)


def _bench_infer(args) -> int:
    import tempfile

    from squeezelab.data import get_preset
    from squeezelab.deploy.bench import ENGINES, bench_infer, format_table
    from squeezelab.deploy.export import export_onnx, load_model
    from squeezelab.errors import ConfigError

    if any(t < 1 for t in args.threads):
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    net, w, preset = load_model(args.weights)
    engines = args.engines or [e for e in ENGINES if e != "ort-int8" or args.int8]
    with tempfile.TemporaryDirectory() as tmp:
        onnx = args.onnx or (export_onnx(args.weights, Path(tmp) / "m.onnx").path if any(
            e.startswith("ort-fp32") for e in engines) else None)
        result = bench_infer(net, get_preset(preset).input_size, onnx_fp32=onnx, onnx_int8=args.int8,
                             threads=args.threads, engines=engines, rounds=args.rounds, iters=args.iters,
                             batch=args.batch)
    result["weights"], result["model"] = str(args.weights), w.model_name
    from squeezelab.runtime import device_name
    import torch

    result["cpu"] = device_name(torch.device("cpu"))
    print(json.dumps(result) if args.json else format_table(result) + f"\n({result['cpu']}, {w.model_name}, "
                                                                      f"{result['input_size']} px)")
    return 0
