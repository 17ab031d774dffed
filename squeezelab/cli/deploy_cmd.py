"""``squeezelab export`` (ONNX, OpenVINO, LiteRT, ExecuTorch; fp32 and int8), ``squeezelab predict`` and
``squeezelab bench infer``: all through the deploy backends."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from squeezelab.cli import args as argtypes


def register(subparsers) -> None:
    _register_export(subparsers)
    _register_predict(subparsers)


# ------------------------------------------------------------------------------------------ export


FORMATS = ("onnx", "openvino", "tflite", "pte")  # the deploy backends' formats (squeezelab.deploy.backends)


def _register_export(subparsers) -> None:
    p = subparsers.add_parser("export", help="export weights to ONNX, OpenVINO, LiteRT or ExecuTorch (fp32, int8)",
                              description="Export any weights to a runtime's file (BatchNorm folded, preset and "
                                          "class names with it): ONNX (ONNX Runtime), OpenVINO IR, LiteRT .tflite "
                                          "(int8: full integer, int8 input and output) or ExecuTorch .pte (XNNPACK). "
                                          "Each file is loaded back in its runtime and checked against torch; "
                                          "--int8 also writes <out>.int8.<suffix>, calibrated on training images of "
                                          "the model's dataset.")
    p.add_argument("--weights", required=True, help=argtypes.WEIGHTS_HELP)
    p.add_argument("--model", help="model name (default: the one the weights name)")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="the runtime's file format (default onnx)")
    p.add_argument("-o", "--out", required=True, help="the file to write (.onnx / .xml / .tflite / .pte)")
    p.add_argument("--int8", action="store_true", help="also write an int8 file (needs --calib-dataset)")
    p.add_argument("--calib-dataset", help="dataset whose TRAINING images calibrate int8 (the model's own)")
    p.add_argument("--calib-data-dir")
    p.add_argument("--calib-n", type=argtypes.COUNT, default=300, help="calibration images (default 300)")
    p.add_argument("--calib-preset", help="preprocessing of the calibration images (default: the weights')")
    p.add_argument("--check-dataset", help="also score torch and every file written on this dataset's split")
    p.add_argument("--check-data-dir")
    p.add_argument("--check-split")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_export)


def _export(args) -> int:
    from squeezelab.deploy.export import export

    written = [export(args.weights, args.out, args.format, model=args.model)]
    if args.int8:
        out = Path(args.out)
        written.append(export(args.weights, out.with_suffix(".int8" + out.suffix), args.format, "int8",
                              calibration=_calibration(args, written[0].preset), model=args.model))
    result = {"format": args.format, "files": [_describe(e) for e in written]}
    lines = [f"{args.weights} -> {e.path} ({e.precision}, {e.bytes:,} bytes); vs torch: max |diff| of the logits "
             f"{e.max_abs_diff:.2e}, same top-1 on {100 * e.agreement:.0f}% of {_N_CHECK} random images"
             for e in written]
    if len(written) == 2:
        lines.append(f"int8 is {written[0].bytes / written[1].bytes:.1f}x smaller than fp32")
    if args.check_dataset:
        result["check"] = _check(args, written)
        lines += [f"{k}: top-1 {100 * v['top1']:.2f}% ({v.get('correct', '')}/{v['n']})" +
                  (f", same top-1 as torch on {100 * v['agreement']:.1f}% of the images" if "agreement" in v else "")
                  for k, v in result["check"].items()]
    print(json.dumps(result) if args.json else "\n".join(lines))
    return 0


_N_CHECK = 16  # export.export's default check images


def _describe(e) -> dict:
    return {"path": str(e.path), "precision": e.precision, "bytes": e.bytes, "max_abs_diff": e.max_abs_diff,
            "agreement": e.agreement, "preset": e.preset}


def _calibration(args, preset: str):
    from squeezelab.deploy.quantize import calibration_batch
    from squeezelab.errors import ConfigError

    if not args.calib_dataset:
        raise ConfigError("--int8 needs --calib-dataset (training images of the model's own dataset)")
    return calibration_batch(args.calib_dataset, args.calib_data_dir, args.calib_preset or preset, args.calib_n)


def _check(args, written: list) -> dict:
    """Top-1/top-5 of torch and of each file on the same images, and how often each file's top-1 agrees
    with torch's."""
    from squeezelab.deploy.accuracy import file_accuracy, torch_accuracy

    out = {"torch": torch_accuracy(args.weights, args.check_dataset, args.check_data_dir, args.check_split,
                                   model=args.model)}
    reference = out["torch"].pop("predictions")
    for e in written:
        r = file_accuracy(e.path, args.check_dataset, args.check_data_dir, args.check_split)
        r["agreement"] = float((r.pop("predictions") == reference).float().mean())
        out[f"{e.format}-{e.precision}"] = r
    return out


# ------------------------------------------------------------------------------------------ predict


def _register_predict(subparsers) -> None:
    p = subparsers.add_parser("predict", help="top-5 classes of images, with the weights' preprocessing",
                              description="Predict the classes of image files (or folders of them) with any "
                                          "weights (torch) or an exported file in its runtime (.onnx, OpenVINO .xml, "
                                          ".tflite, .pte). Unreadable images get one "
                                          "line each on stderr; the others are still predicted.")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--weights", help=argtypes.WEIGHTS_HELP)
    p.add_argument("--file", "--onnx", dest="file", help="a file written by squeezelab export (any format)")
    p.add_argument("--backend", help="the runtime to run --file in (default: by its suffix; openvino also "
                                     "runs .onnx)")
    p.add_argument("--classes", help="class names, one per line (ImageNet's synset_words.txt works as is)")
    p.add_argument("--top", type=argtypes.COUNT, default=5)
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.set_defaults(func=_predict)


def _predict(args) -> int:
    from squeezelab.deploy.predict import (
        Predictor,
        image_paths,
        load_image,
        read_class_names,
    )
    from squeezelab.errors import ConfigError, DataError
    from squeezelab.runtime import printable

    if args.top < 1:
        raise ConfigError(f"--top must be >= 1, got {args.top}")
    predictor = Predictor(args.weights, args.file, read_class_names(args.classes) if args.classes else None,
                          args.backend)
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
    p = sub.add_parser("infer", help="inference latency/throughput of every installed engine, side by side",
                       description="Batch-1 latency (median, p90) and batch-32 throughput of the same weights in "
                                   "torch eager (NCHW, channels_last), torch.compile and every installed backend "
                                   "(ONNX Runtime, OpenVINO, LiteRT, ExecuTorch; fp32, int8 with "
                                   "--calib-dataset, OpenVINO's bf16 hint), with 1 and 2 threads, in alternating "
                                   "rounds. Engines that cannot run here are listed with the reason.")
    p.add_argument("--weights", required=True, help=argtypes.WEIGHTS_HELP)
    p.add_argument("--file", action="append", default=[], metavar="ENGINE=PATH",
                   help="use this exported file for an engine (e.g. onnxruntime-int8=m.int8.onnx) instead of "
                        "exporting one (repeatable)")
    p.add_argument("--onnx", help="the fp32 ONNX file of these weights (= --file onnxruntime-fp32=PATH)")
    p.add_argument("--int8", help="its int8 ONNX file (= --file onnxruntime-int8=PATH)")
    p.add_argument("--calib-dataset", help="make the int8 files, calibrated on this dataset's TRAINING images")
    p.add_argument("--calib-data-dir")
    p.add_argument("--calib-n", type=argtypes.COUNT, default=300)
    p.add_argument("--calib-preset")
    p.add_argument("--threads", type=argtypes.THREADS, nargs="+", default=[1, 2])
    p.add_argument("--engines", nargs="+", default=None, help="subset of engines (default: all)")
    p.add_argument("--rounds", type=argtypes.COUNT, default=5)
    p.add_argument("--iters", type=argtypes.COUNT, default=20, help="batch-1 calls per engine per round")
    p.add_argument("--batch", type=argtypes.COUNT, default=32)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_bench_infer)


def _bench_infer(args) -> int:
    import torch

    from squeezelab.data import get_preset
    from squeezelab.deploy.bench import bench_infer, format_table
    from squeezelab.deploy.graph import load_model
    from squeezelab.errors import ConfigError
    from squeezelab.runtime import device_name

    if any(t < 1 for t in args.threads):
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    files = dict(_engine_file(item) for item in args.file)
    files.update({k: v for k, v in (("onnxruntime-fp32", args.onnx), ("onnxruntime-int8", args.int8)) if v})
    _, w, preset = load_model(args.weights)
    calibration = _calibration(args, preset) if args.calib_dataset else None
    result = bench_infer(args.weights, get_preset(preset).input_size, engines=args.engines, threads=args.threads,
                         files=files, calibration=calibration, rounds=args.rounds, iters=args.iters,
                         batch=args.batch)
    result["weights"], result["model"] = str(args.weights), w.model_name
    result["cpu"] = device_name(torch.device("cpu"))
    print(json.dumps(result) if args.json else format_table(result) + f"\n({result['cpu']}, {w.model_name}, "
                                                                      f"{result['input_size']} px)")
    return 0


def _engine_file(item: str) -> tuple[str, str]:
    from squeezelab.errors import ConfigError

    engine, sep, path = item.partition("=")
    if not sep or not engine or not path:
        raise ConfigError(f"--file takes ENGINE=PATH (e.g. onnxruntime-int8=m.int8.onnx), got {item!r}")
    return engine, path
