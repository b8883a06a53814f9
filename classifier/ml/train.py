"""Training: a linear head on cached embeddings ("head"), or the whole network ("finetune").

    python -m classifier.ml.train --data DIR --out MODEL_DIR [--mode head|finetune] [--backbone NAME]
        [--epochs N] [--seed S] [--batch-size B] [--cache-dir D] [--test-fraction F] [--device cpu|cuda]
        [--min-per-class N] [--class-map CLASSES.json]

Every version serves every class (classifier/ml/coverage.py): the classes with --min-per-class
images are learned, the project's other classes with an ImageNet mapping keep their zero-shot
scores, and "other" is always served; the card says how each class is served.

The images are split by a hash of their content (see datasets.py): test is held out for the
final figures only, validation (carved out of train) chooses the head's weight decay, stops
fine-tuning early and fits the temperature. Progress goes to stderr, one line per epoch; the
last line on stdout is the metrics as JSON. MODEL_DIR is written atomically: card.json plus
head.pt (a linear layer's state dict) or model.pt (the whole network's).

The Django app calls fit(TrainConfig(items=[Item(path, label, split), ...], out=...)) with
the same code. Fine-tuning follows torchvision's classification reference: RandomResizedCrop,
flip and TrivialAugmentWide, label smoothing, AdamW with linear warm-up then cosine decay,
AMP and channels_last on CUDA, checkpoints (a plain dict) after every epoch that --resume
continues from.
"""

import argparse
import datetime
import json
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .artifacts import write_model_dir
from .backbones import UnknownBackbone
from .cards import KIND_HEAD, ModelCard
from .config import AUGMENTS, MODES, Progress, ProgressEvent, TrainConfig, TrainResult
from .datasets import (
    DEFAULT_TEST_FRACTION,
    DEFAULT_VAL_FRACTION,
    TEST,
    TRAIN,
    VAL,
    Item,
    TooFewImages,
    assign_splits,
    image_folder,
    snapshot_sha256,
    split_items,
)
from .finetune import train_finetune
from .head import train_head
from .scoring import class_map_of, class_plan, prior_function, score, served_map, served_summary

__all__ = ["TrainConfig", "ProgressEvent", "TrainResult", "fit", "main"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def prepare_items(config: TrainConfig) -> list[Item]:
    """Every labelled image with its split; classes below the minimum stay (scoring.class_plan)."""
    raw = image_folder(config.data_dir) if config.data_dir is not None else [
        item if isinstance(item, Item) else Item(*item) for item in config.items
    ]
    return assign_splits(raw, test_fraction=config.test_fraction, val_fraction=config.val_fraction)


def hardware(device: str) -> dict:
    info = {"device": device, "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "platform": platform.platform()}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def fit(config: TrainConfig, *, progress: Progress | None = None) -> TrainResult:
    started = time.perf_counter()
    progress = progress or (lambda event: None)
    if config.out.exists() and not config.overwrite:
        raise FileExistsError(f"{config.out} already exists; a model directory is never changed in place "
                              "(choose a new output folder, or pass overwrite)")
    seed_everything(config.seed)
    items = prepare_items(config)
    class_map = class_map_of(config, items)
    plan = class_plan(config, items, class_map)
    learned_items = [i for i in items if i.label in plan.learned]
    if config.mode != KIND_HEAD and not split_items(learned_items, VAL):
        # A head cross-validates over train and validation together; a fine-tune stops early on validation.
        raise TooFewImages("The validation split is empty; add images or raise the validation fraction")
    # A head scores every labelled image; a fine-tune's loaders know only the classes it learns.
    evaluated = items if config.mode == KIND_HEAD else learned_items
    if config.mode == KIND_HEAD:
        outcome = train_head(config, items, plan.learned, progress, prior=prior_function(config, plan, class_map))
    else:
        outcome = train_finetune(config, learned_items, plan.learned, progress)
    validation = outcome.validation if outcome.validation is not None else split_items(evaluated, VAL)
    scores = score(config, plan, class_map, outcome, validation, split_items(evaluated, TEST))
    seconds = time.perf_counter() - started
    counts = {f"n_{split}": len(split_items(evaluated, split)) for split in (TRAIN, VAL, TEST)}
    summary = _summary(config, plan, scores, outcome, counts, seconds)
    card = ModelCard(
        kind=config.mode,
        backbone=config.backbone,
        classes=plan.classes,
        preprocessing=outcome.preprocessing,
        imagenet_map=served_map(plan, class_map),
        temperature=scores.temperature,
        head_classes=plan.learned,
        served=plan.served,
        zero_shot_temperature=scores.zero_shot_temperature,
        other_bias=scores.other_bias,
        prior_weight=scores.prior_weight,
        zero_shot_top_k=scores.zero_shot_top_k,
        tta=config.use_tta,
        files={name: "" for name in outcome.weights},  # write_model_dir fills in the checksums
        metrics={"test": scores.test.to_dict(), "val": scores.val.to_dict(),
                 "test_before_temperature": scores.test_before.to_dict(), "summary": summary},
        training={
            "config": config.to_dict(), "seed": config.seed, **counts, "n_images": len(items),
            "snapshot_sha256": snapshot_sha256(items), "hardware": hardware(config.device),
            "seconds": round(seconds, 2), **outcome.training, "history": outcome.history,
            "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        },
    )
    progress(ProgressEvent("write", 0, 1))
    card = write_model_dir(config.out, card, outcome.weights, overwrite=config.overwrite)
    progress(ProgressEvent("write", 1, 1))
    return TrainResult(model_dir=config.out, card=card, summary=summary, history=outcome.history)


def _summary(config: TrainConfig, plan, scores, outcome, counts: dict, seconds: float) -> dict:
    test, before, val = scores.test, scores.test_before, scores.val
    return {
        "mode": config.mode, "backbone": config.backbone,
        "accuracy": round(test.accuracy, 4), "macro_f1": round(test.macro_f1, 4),
        "ece_before": round(before.ece, 4), "ece_after": round(test.ece, 4),
        "nll_before": round(before.nll, 4), "nll_after": round(test.nll, 4),
        "temperature": round(scores.temperature, 4), "other_bias": round(scores.other_bias, 4),
        "prior_weight": scores.prior_weight,
        "zero_shot_temperature": round(scores.zero_shot_temperature, 4),
        "val_accuracy": round(val.accuracy, 4), "val_macro_f1": round(val.macro_f1, 4),
        **counts, "classes": len(plan.classes), "served": served_summary(plan), "tta": config.use_tta,
        "seed": config.seed, **outcome.extra, "seconds": round(seconds, 2), "model_dir": str(config.out),
    }


# --- command line ---------------------------------------------------------------------------

def stderr_progress(event: ProgressEvent) -> None:
    if event.stage == "epoch":
        m = event.metrics
        print(f"epoch {event.epoch}/{event.epochs}: loss {m['train_loss']:.4f} train acc {m['train_accuracy']:.4f} "
              f"val acc {m['val_accuracy']:.4f} val macro-F1 {m['val_macro_f1']:.4f} lr {m['lr']:.2e} "
              f"{m['images_per_s']:.1f} img/s {m['seconds']:.1f} s", file=sys.stderr, flush=True)
    elif event.stage == "train" and (event.done % 10 == 0 or event.done == event.total):
        print(f"epoch {event.epoch}/{event.epochs} step {event.done}/{event.total}: loss {event.metrics['loss']:.4f}",
              file=sys.stderr, flush=True)
    elif event.stage == "embed" and (event.done == event.total or event.done % 256 == 0):
        print(f"embed: {event.done}/{event.total} images", file=sys.stderr, flush=True)
    elif event.stage in ("fit", "evaluate", "write") and event.done == event.total:
        extra = " ".join(f"{k} {v}" for k, v in event.metrics.items())
        print(f"{event.stage}: done {extra}".rstrip(), file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m classifier.ml.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path, help="ImageFolder tree: one sub-folder per class")
    parser.add_argument("--out", required=True, type=Path, help="model directory to create")
    parser.add_argument("--mode", default=KIND_HEAD, choices=MODES)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs, help="finetune only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--cache-dir", type=Path, default=None, help="embedding cache folder")
    parser.add_argument("--weights-dir", type=Path, default=None, help="where the backbone's ImageNet weights are")
    parser.add_argument("--test-fraction", type=float, default=DEFAULT_TEST_FRACTION)
    parser.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION)
    parser.add_argument("--min-per-class", type=int, default=TrainConfig.min_per_class,
                        help="labels a class needs to be learned; the rest keep their zero-shot scores")
    parser.add_argument("--class-map", type=Path, default=None,
                        help="JSON {class: [ImageNet indices]}: the project's classes; those the data does not "
                             "teach keep their zero-shot scores (default: the folder names, mapped by the shipped "
                             "table)")
    parser.add_argument("--refit-all", action=argparse.BooleanOptionalAction, default=True,
                        help="head: after scoring the recipe on the test split, serve a head refitted on every "
                             "image (default: on; the metrics then describe the recipe, not the refitted head)")
    parser.add_argument("--zero-shot-temperature", type=float, default=None,
                        help="default: the backbone's, fitted on the Caltech animals")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="flip-averaged features (default: on for head, off for finetune)")
    parser.add_argument("--lr", type=float, default=None,
                        help="finetune only (default: 3e-5 from the linear probe, 1e-4 with --no-init-head)")
    parser.add_argument("--weight-decay", type=float, default=TrainConfig.weight_decay, help="finetune only")
    parser.add_argument("--label-smoothing", type=float, default=None,
                        help="finetune only (default: 0 from the linear probe, 0.1 with --no-init-head)")
    parser.add_argument("--augment", choices=AUGMENTS, default=None,
                        help="finetune only (default: light from the linear probe, strong with --no-init-head)")
    parser.add_argument("--freeze-norm-stats", action="store_true",
                        help="finetune only: BatchNorm keeps its ImageNet running statistics")
    parser.add_argument("--warmup-epochs", type=int, default=TrainConfig.warmup_epochs)
    parser.add_argument("--patience", type=int, default=TrainConfig.patience)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=None, help="finetune crop size (default: the backbone's)")
    parser.add_argument("--no-init-head", dest="init_head", action="store_false",
                        help="finetune from a random head instead of the linear probe (LP-FT)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: <out>.checkpoint.pt beside --out")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint when there is one")
    parser.add_argument("--overwrite", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = TrainConfig(
            out=args.out, data_dir=args.data, mode=args.mode, backbone=args.backbone, seed=args.seed,
            device=args.device, batch_size=args.batch_size, cache_dir=args.cache_dir, weights_dir=args.weights_dir,
            test_fraction=args.test_fraction, val_fraction=args.val_fraction, min_per_class=args.min_per_class,
            class_map=json.loads(args.class_map.read_text()) if args.class_map else None,
            zero_shot_temperature=args.zero_shot_temperature, refit_on_all=args.refit_all,
            tta=args.tta, overwrite=args.overwrite, epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
            label_smoothing=args.label_smoothing, augment=args.augment, freeze_norm_stats=args.freeze_norm_stats,
            warmup_epochs=args.warmup_epochs, patience=args.patience,
            workers=args.workers, image_size=args.image_size, init_head=args.init_head, checkpoint=args.checkpoint,
            resume=args.resume,
        )
        result = fit(config, progress=stderr_progress)
    except (ValueError, FileNotFoundError, FileExistsError, UnknownBackbone) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result.summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
