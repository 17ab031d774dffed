"""Per-layer rate allocation for ECQ + GPTQ from a sensitivity scan (issue 22 section 1: "mixed bits per
layer from a sensitivity scan").

One rate weight for every layer (``ecq.rate_weight: 0.01``) spends the same normalised error per bit
everywhere, but the layers differ by two orders of magnitude in what a coded byte is worth: at rate 0.01
fire2.expand1x1 saves 1.3 KB for a KL of 0.009 to the 8-bit network, fire8.expand3x3 saves 18.6 KB for
0.002 (results/rate_accuracy/scan.json). ``scan`` measures, for every layer ALONE and every rate weight on a grid, the layer's coded bytes
and the KL of the whole network to the 8-bit one on held-out images (ECQ codebook, GPTQ re-rounding
priced by ECQ's code rates, least-squares codebook and bias: the ``ecq.reconstruct: gptq`` step for that
layer, on the same 256 calibration images). ``allocate`` then picks, for a Lagrange multiplier lambda,
each layer's option minimising KL + lambda x bytes (the KL of independent small errors adds up, to
first order), sweeps lambda, grows the best allocation under each target size by the upgrades with the
most KL saved a byte (``filled``), and writes one ``ecq`` section per target size: per-layer ``bits`` and
``rate_weight`` maps, a one-shot recipe that ``squeezelab compress`` runs as it is. Options per layer:
the grid's rate weights at 7 bits (conv1 8), or the 8-bit source's codes kept (``bits`` 8, rate 0); a
scan at other bits (``--bits 8``: ECQ's fine rates between 7-bit k-means and the source) adds its rows
as more options per layer when ``allocate`` is given it beside the others.

    python scripts/allocate_rates.py scan --weights ../shared/data/squeezenet-deep-compression/compressed_SqueezeNet.net \\
        --tiny-dir ../shared/data/tiny-imagenet-200 --class-map ../shared/data/imagenet-val-300/synset_words.txt \\
        -o results/rate_accuracy/scan.json
    python scripts/allocate_rates.py allocate results/rate_accuracy/scan.json --overhead 9802 \\
        --targets 311000,331000,360000,395000,410000,442000 -o results/rate_accuracy/allocations.json
    python scripts/allocate_rates.py scan ... --bits 8 --zeros free --rates 0.0005,0.001,0.0025,0.005,0.01 \\
        --layers <every layer but conv1> -o results/rate_accuracy/scan_8bit.json

Images: calibration = 256 Tiny ImageNet training images (seed 0, the pipeline's own choice); the scan's
KL = held-out Tiny training images 1000..1000+n (the 2% held out, seed 0); images 0..999 of that split
judge the resulting files (``rate_accuracy.py choose``), so the scan never sees them; imagenet-val-300 only
reports.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from squeezelab.compression import calibrate as cal
from squeezelab.compression.ecq import code_price, ecq_tensor
from squeezelab.compression.layers import weight_layers
from squeezelab.data import get_preset, load_dataset
from squeezelab.weights import load_weights, model_from_weights, sqz

RATES = (0.0, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16)
BITS, CONV1_BITS, SOURCE_BITS = 7, 8, 8


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("scan", help="bytes and KL of every layer alone at every rate weight")
    s.add_argument("--weights", required=True)
    s.add_argument("--tiny-dir", required=True)
    s.add_argument("--class-map", required=True)
    s.add_argument("--rates", default=",".join(map(str, RATES)))
    s.add_argument("--images", type=int, default=300, help="held-out images for the KL (from index 1000)")
    s.add_argument("--layers", default="*", help="comma-separated layer names (default: every weight layer)")
    s.add_argument("--bits", type=int, default=BITS, help=f"codebook bits of every layer but conv1 (default {BITS}; "
                   f"conv1 {CONV1_BITS}); scans at other bits merge into one allocation as more options per layer")
    s.add_argument("--zeros", choices=("fixed", "free"), default="fixed",
                   help="ecq.zeros: free lets the priced rounding round kept weights of pruned layers to zero")
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("-o", "--out", required=True)
    a = sub.add_parser("allocate", help="per-layer rate weights for target sizes, from a scan")
    a.add_argument("scan", nargs="+", help="scan files; a layer in a later one replaces it in an earlier one (a "
                   "--zeros free scan of the pruned layers over a fixed one of all: free changes nothing on "
                   "dense layers)")
    a.add_argument("--targets", required=True, help="comma-separated predicted file sizes in bytes")
    a.add_argument("--overhead", type=int, default=0, help="bytes of the file outside the scanned weights")
    a.add_argument("--kl-floor", type=float, default=0.0, help="a quantised option's KL counts as at least this "
                   "(the scan's resolution; 1e-5 lets the frontier run on to the source's codes)")
    a.add_argument("-o", "--out", required=True)
    args = ap.parse_args()
    if args.command == "scan":
        torch.set_num_threads(args.threads)
        scan(args)
    else:
        allocate_cmd(args)


# ------------------------------------------------------------------------------------------- scan

class _Staged:
    """The network's stage inputs on the scan images, cached, so a change in one layer reruns only the
    stages from that layer's on."""

    def __init__(self, model, batches):
        self.model, self.stages = model, list(model.feature_names) + ["forward_head"]
        self.inputs = {s: [] for s in self.stages}
        with torch.no_grad():
            for x in batches:
                for s in self.stages:
                    self.inputs[s].append(x)
                    x = getattr(model, s)(x)

    def stage_of(self, layer: str) -> str:
        top = layer.split(".")[0]
        return top if top in self.stages[:-1] else "forward_head"

    @torch.no_grad()
    def logits_from(self, stage: str) -> torch.Tensor:
        rest, out = self.stages[self.stages.index(stage):], []
        for x in self.inputs[stage]:
            for s in rest:
                x = getattr(self.model, s)(x)
            out.append(x.float())
        return torch.cat(out)


def _kl(logits, reference) -> float:
    return float(torch.nn.functional.kl_div(logits.log_softmax(1), reference.log_softmax(1), log_target=True,
                                            reduction="batchmean"))


def layer_bytes(name: str, weight: torch.Tensor) -> int:
    """A weight's bytes in a .sqz file: codebook + (gap stream) + code stream, as ``write_sqz`` codes it."""
    t = sqz.encode_tensor(name, weight, coder="auto")
    return (0 if t.codebook is None else t.codebook.nbytes) + sum(
        len(s.data) for s in ([t.gaps] if t.sparse else []) + [t.values])


def _moments(model, layers: dict, batches) -> dict:
    """Each layer's input / output moments on the calibration images, all layers in one forward each."""
    moments = {n: cal._Moments() for n in layers}
    hooks = [m.register_forward_hook(lambda mod, a, out, n=n: moments[n].add(cal._rows(mod, a[0]), cal._out_rows(out)))
             for n, m in layers.items()]
    try:
        with torch.no_grad():
            for x in batches:
                model(x)
    finally:
        for h in hooks:
            h.remove()
    return {n: m.solved() for n, m in moments.items()}


def quantised(weight: torch.Tensor, bits: int, rate: float, moments,
              zeros: str = "fixed") -> tuple[torch.Tensor, torch.Tensor]:
    """One layer through ``ecq`` + ``reconstruct: gptq`` as the pipeline does it for a layer whose inputs
    are the original network's: ECQ codebook, GPTQ re-rounding priced by ECQ's code rates, least-squares
    codebook, bias from the means (``calibrate.solve_layer``). -> (weight, bias)."""
    s = ecq_tensor(weight, bits, rate)
    _, wq, bias = cal.solve_layer(s, weight, moments, penalty=code_price(weight, s, rate, zeros) if rate > 0 else None)
    return wq, bias.float()


def scan(args) -> None:
    rates = [float(r) for r in args.rates.split(",")]
    w = load_weights(args.weights)
    preset = get_preset(w.preset)
    common = {"preset": preset.name, "val_fraction": 0.02, "seed": 0, "in_memory": False,
              "class_map": args.class_map}
    held = load_dataset("tiny-imagenet", args.tiny_dir, "val", **common)
    train = load_dataset("tiny-imagenet", args.tiny_dir, "train", **common)
    images = torch.stack([held[i][0] for i in range(1000, 1000 + args.images)])
    staged = _Staged(model_from_weights(w).eval(), [preset.eval(images[i:i + 50]) for i in range(0, len(images), 50)])
    model = staged.model
    reference = staged.logits_from(staged.stages[0])
    layers = weight_layers(model, ("*",), ())
    if args.layers != "*":
        layers = {n: layers[n] for n in args.layers.split(",")}
    t0 = time.time()
    moments = _moments(model, layers, cal._calibration((train, preset), 256, 0, torch.device("cpu"), "scan"))
    out = {"rates": rates, "images": args.images, "bits": args.bits, "conv1_bits": CONV1_BITS, "zeros": args.zeros,
           "layers": {}}
    for name, layer in layers.items():
        weight, bias = layer.weight.detach().clone(), layer.bias.detach().clone()
        rows = []
        for rate in rates:
            wq, bq = quantised(weight, CONV1_BITS if name == "conv1" else args.bits, rate, moments[name], args.zeros)
            with torch.no_grad():
                layer.weight.copy_(wq)
                layer.bias.copy_(bq)
                logits = staged.logits_from(staged.stage_of(name))
                layer.weight.copy_(weight)
                layer.bias.copy_(bias)
            rows.append({"rate": rate, "bytes": layer_bytes(name + ".weight", wq), "kl": _kl(logits, reference),
                         "agree": float((logits.argmax(1) == reference.argmax(1)).float().mean())})
        out["layers"][name] = {"base_bytes": layer_bytes(name + ".weight", weight), "rows": rows}
        print(name, [(r["rate"], r["bytes"], round(r["kl"], 4)) for r in rows], f"({time.time() - t0:.0f} s)", flush=True)
        Path(args.out).write_text(json.dumps(out, indent=1))


# --------------------------------------------------------------------------------------- allocate

def options(entry: dict, kl_floor: float = 0.0) -> list[tuple[int, float, tuple[int, float] | None]]:
    """(bytes, KL, (bits, rate) or None for the 8-bit source's codes) for one layer. ``kl_floor``: the
    scan's resolution; a quantised option's KL below it (as measured: 0 or even negative on 300 images)
    counts as the floor, so the near-lossless end of the frontier reaches the source's codes."""
    return [(r["bytes"], max(r["kl"], kl_floor), (r["bits"], r["rate"])) for r in entry["rows"]] + [
        (entry["base_bytes"], 0.0, None)]


def allocation(scan: dict, lam: float,
               kl_floor: float = 0.0) -> dict[str, tuple[int, float, tuple[int, float] | None]]:
    """Each layer's option minimising KL + lam x bytes."""
    return {name: min(options(e, kl_floor), key=lambda o: o[1] + lam * o[0]) for name, e in scan["layers"].items()}


def frontier(scan: dict, overhead: int, kl_floor: float = 0.0) -> list[dict]:
    """Every distinct allocation along a lambda sweep: predicted bytes, predicted KL (the sum) and the picks."""
    out, seen, lam = [], set(), 1e-9
    while lam < 1e-2:
        picks = allocation(scan, lam, kl_floor)
        key = tuple(p[2] for p in picks.values())
        if key not in seen:
            seen.add(key)
            out.append({"lambda": lam, "bytes": overhead + sum(p[0] for p in picks.values()),
                        "kl_sum": sum(p[1] for p in picks.values()), "picks": {n: p[2] for n, p in picks.items()}})
        lam *= 1.1
    return out


def filled(scan: dict, point: dict, target: int, kl_floor: float = 0.0) -> dict:
    """``point`` (a frontier allocation) grown towards ``target`` bytes between two Lagrangian points: the
    upgrade (one layer to a larger, closer option) with the most KL saved a byte that still fits, again
    and again (the frontier alone jumps where one large layer flips, e.g. conv10's 137 KB)."""
    opts = {n: options(e, kl_floor) for n, e in scan["layers"].items()}
    picks = {n: next(o for o in opts[n] if o[2] == p) for n, p in point["picks"].items()}
    size = point["bytes"]
    while True:
        ups = [((cur[1] - o[1]) / (o[0] - cur[0]), n, o) for n, cur in picks.items() for o in opts[n]
               if o[0] > cur[0] and o[1] < cur[1] and size + o[0] - cur[0] <= target]
        if not ups:
            break
        _, n, o = max(ups, key=lambda u: u[0])
        size += o[0] - picks[n][0]
        picks[n] = o
    return {"lambda": point["lambda"], "bytes": size, "kl_sum": sum(o[1] for o in picks.values()),
            "picks": {n: o[2] for n, o in picks.items()}}


def section(picks: dict, zeros: str = "fixed") -> dict:
    """An ``ecq`` config section for these picks: per-layer bits and rate weights (and the scan's zeros)."""
    bits_map = {n: (SOURCE_BITS if p is None else p[0]) for n, p in picks.items()}
    rate_map = {n: (0.0 if p is None else p[1]) for n, p in picks.items()}
    out = {"bits": bits_map, "rate_weight": rate_map, "reconstruct": "gptq"}
    return out | ({"zeros": zeros} if zeros != "fixed" else {})


def _tagged(scan: dict) -> dict:
    """A scan whose every row carries its bits (the scan's, conv1's own for conv1)."""
    layers = {n: dict(e, rows=[dict(r, bits=r.get("bits", scan["conv1_bits"] if n == "conv1" else scan["bits"]))
                               for r in e["rows"]]) for n, e in scan["layers"].items()}
    return dict(scan, images=scan.get("images", scan.get("nscan")), layers=layers)  # (the first scan.json said nscan)


def merged(scans: list[dict]) -> dict:
    """One scan from several. A later scan's rows of a layer replace the earlier ones' rows at the same bits
    (a --zeros free scan of the pruned layers over a fixed one of all); rows at other bits are more options.
    Every scan must score on the same images; the last one's zeros hold."""
    scans = [_tagged(s) for s in scans]
    out = dict(scans[0], layers=dict(scans[0]["layers"]))
    for s in scans[1:]:
        if s["images"] != out["images"]:
            raise SystemExit("allocate: the scans score on different images; they cannot be merged")
        for name, e in s["layers"].items():
            bits = {r["bits"] for r in e["rows"]}
            kept = [r for r in out["layers"].get(name, {"rows": []})["rows"] if r["bits"] not in bits]
            out["layers"][name] = dict(e, rows=kept + e["rows"])
        out["zeros"] = s.get("zeros", "fixed")
    return out


def allocate_cmd(args) -> None:
    scan_ = merged([json.loads(Path(p).read_text()) for p in args.scan])
    points = frontier(scan_, args.overhead, args.kl_floor)
    chosen = []
    for target in (int(t) for t in args.targets.split(",")):
        fits = [p for p in points if p["bytes"] <= target]
        if not fits:
            print(f"no allocation fits {target:,} B")
            continue
        best = filled(scan_, min(fits, key=lambda p: p["kl_sum"]), target, args.kl_floor)
        chosen.append({"target": target, "predicted_bytes": best["bytes"], "predicted_kl": best["kl_sum"],
                       "lambda": best["lambda"], "ecq": section(best["picks"], scan_.get("zeros", "fixed"))})
        print(f"target {target:,}: predicted {best['bytes']:,} B, KL sum {best['kl_sum']:.4f}")
    Path(args.out).write_text(json.dumps({"scan": args.scan, "overhead": args.overhead, "allocations": chosen},
                                         indent=1))


if __name__ == "__main__":
    main()
