"""Training and evaluation engine.

    from squeezelab.engine import fit, evaluate, save_checkpoint, read_checkpoint
    run_dir = fit(load_config("configs/cifar10_small_best.yaml", ["train.epochs=5"]))

``fit(config, *, resume=None) -> Path`` trains and writes ``runs/<id>/`` (see engine/run.py);
``evaluate(model, loader, preset, device) -> {"top1", "top5", "loss", "n"}``;
``evaluate_weights(weights, dataset, ...)`` (``squeezelab eval``); ``bench_train`` (``squeezelab bench
train``); checkpoints are single safetensors files (weights/checkpoint.py). Importing this package
imports torch but builds nothing.
"""

from squeezelab.engine.bench import bench_train
from squeezelab.weights.checkpoint import Checkpoint, read_checkpoint, save_checkpoint  # re-exported: the engine writes them
from squeezelab.engine.evaluation import evaluate_weights
from squeezelab.engine.loop import evaluate, train_one_epoch
from squeezelab.engine.run import fit
from squeezelab.engine.optim import AdaBound, build_optimizer
from squeezelab.engine.schedules import Plateau, lr_factor

__all__ = [
    "AdaBound", "Checkpoint", "Plateau", "bench_train", "build_optimizer", "evaluate", "evaluate_weights", "fit",
    "lr_factor", "read_checkpoint", "save_checkpoint", "train_one_epoch",
]
