"""Training: a linear head on cached embeddings ("head"), or the whole network ("finetune").

    python -m classifier.ml.train --data DIR --out MODEL_DIR [--mode head|finetune] [--backbone NAME]
        [--epochs N] [--seed S] [--batch-size B] [--cache-dir D] [--test-fraction F] [--device cpu|cuda]

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
import math
import os
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision.transforms import InterpolationMode, v2

from .artifacts import save_atomically, write_model_dir
from .backbones import UnknownBackbone, get_spec, load_backbone
from .datasets import (
    DEFAULT_TEST_FRACTION,
    DEFAULT_VAL_FRACTION,
    TEST,
    TRAIN,
    VAL,
    ImageDataset,
    Item,
    TooFewImages,
    assign_splits,
    check_min_per_class,
    check_training_splits,
    class_names,
    image_folder,
    snapshot_sha256,
    split_items,
)
from .embed import embed_items
from .head import WEIGHT_DECAY_GRID, fit_head, linear_logits
from .metrics import classification_metrics, fit_temperature, softmax
from .networks import ImageClassifier
from .predict import KIND_FINETUNE, KIND_HEAD, ModelCard
from .preprocessing import Preprocessing

MODES = (KIND_HEAD, KIND_FINETUNE)
AUGMENTS = ("light", "strong")
DEVICES = ("cpu", "cuda")


@dataclass
class TrainConfig:
    out: Path
    data_dir: Path | None = None  # an ImageFolder tree, or:
    items: Sequence[Item] | None = None  # (path, label, split) items; split None: assigned by content hash
    mode: str = KIND_HEAD
    backbone: str = "efficientnet_lite0"
    seed: int = 0
    device: str = "cpu"
    batch_size: int = 32
    cache_dir: Path | None = None  # embedding cache; None: no cache
    weights_dir: Path | None = None  # where the backbone's ImageNet weights are
    test_fraction: float = DEFAULT_TEST_FRACTION
    val_fraction: float = DEFAULT_VAL_FRACTION
    min_per_class: int = 5
    tta: bool | None = None  # flip-averaged features; None: on for head, off for finetune
    overwrite: bool = False
    # head
    weight_decays: tuple[float, ...] = WEIGHT_DECAY_GRID
    # finetune
    epochs: int = 30
    # None: chosen by init_head. From a random head, 1e-4, label smoothing 0.1 and strong
    # augmentation (chosen on validation macro-F1 on caltech101-animals, CPU, a few epochs: 1e-4
    # peaked at 0.927, 3e-4 at 0.913). From the linear probe (LP-FT) the head is already fitted,
    # so a small step (3e-5), no smoothing and light augmentation (crop and flip).
    lr: float | None = None
    weight_decay: float = 0.05
    label_smoothing: float | None = None
    augment: str | None = None  # "light" or "strong" (TrivialAugmentWide); None: chosen by init_head
    freeze_norm_stats: bool = False  # BatchNorm keeps its ImageNet running statistics while fine-tuning
    warmup_epochs: int = 2
    patience: int = 5  # epochs without a better validation macro-F1 before stopping
    workers: int | None = None  # DataLoader processes; None: 0 on the CPU, up to 8 on CUDA
    image_size: int | None = None  # crop size; None: the backbone's
    # LP-FT (Kumar et al. 2022): start from the head that head mode fits (the same weight-decay
    # grid chosen on validation, on the same cached features), which is also the epoch-0
    # candidate of early stopping; False: a random head.
    init_head: bool = True
    checkpoint: Path | None = None  # None: MODEL_DIR's sibling <name>.checkpoint.pt
    resume: bool = False

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"Unknown mode {self.mode!r}; choose one of: {', '.join(MODES)}")
        if self.device.split(":")[0] not in DEVICES:
            raise ValueError(f"Unknown device {self.device!r}; choose one of: {', '.join(DEVICES)}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError("device cuda was asked for but torch sees no CUDA GPU; use --device cpu")
        if (self.data_dir is None) == (self.items is None):
            raise ValueError("give exactly one of data_dir (an ImageFolder tree) or items")
        if self.mode == KIND_HEAD and self.image_size is not None:
            raise ValueError("image_size applies to finetune only: a head uses its backbone's own preprocessing")
        if self.augment not in (None, *AUGMENTS):
            raise ValueError(f"Unknown augment {self.augment!r}; choose one of: {', '.join(AUGMENTS)}")
        for name in ("epochs", "batch_size", "min_per_class"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        get_spec(self.backbone)  # fails loudly, naming the valid backbones
        self.out = Path(self.out)

    @property
    def use_tta(self) -> bool:
        # Measured for the head by 5-fold CV on the non-test part of caltech101-animals:
        # flip-averaged Lite0 features gave NLL 0.094 against 0.109 and accuracy 96.9% against
        # 96.6%, for twice the backbone time (L2-normalising the features did not help).
        return self.mode == KIND_HEAD if self.tta is None else self.tta

    @property
    def finetune_lr(self) -> float:
        return self.lr if self.lr is not None else (3e-5 if self.init_head else 1e-4)

    @property
    def finetune_label_smoothing(self) -> float:
        if self.label_smoothing is not None:
            return self.label_smoothing
        return 0.0 if self.init_head else 0.1

    @property
    def finetune_augment(self) -> str:
        return self.augment or ("light" if self.init_head else "strong")

    @property
    def checkpoint_path(self) -> Path:
        return Path(self.checkpoint) if self.checkpoint else self.out.parent / f"{self.out.name}.checkpoint.pt"

    def to_dict(self) -> dict:
        data = {k: v for k, v in asdict(self).items() if k != "items"}
        return json.loads(json.dumps(data, default=str))  # paths as strings


@dataclass(frozen=True)
class ProgressEvent:
    stage: str  # embed, fit, train, evaluate, write
    done: int  # images, candidates, steps or epochs done in this stage
    total: int
    epoch: int | None = None  # 1-based, finetune only
    epochs: int | None = None
    metrics: dict = field(default_factory=dict)


Progress = Callable[[ProgressEvent], None]  # raise from it to cancel: nothing is written


@dataclass(frozen=True)
class TrainResult:
    model_dir: Path
    card: ModelCard
    summary: dict  # the figures the CLI prints as its last line
    history: list[dict]


@dataclass
class _Outcome:
    """What a mode hands back: everything else (metrics, card, files) is shared."""
    weights: dict[str, dict]
    preprocessing: Preprocessing
    val_logits: np.ndarray
    test_logits: np.ndarray
    history: list[dict]
    extra: dict
    training: dict = field(default_factory=dict)  # recorded in the card's training section


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def prepare_items(config: TrainConfig) -> list[Item]:
    raw = image_folder(config.data_dir) if config.data_dir is not None else [
        item if isinstance(item, Item) else Item(*item) for item in config.items
    ]
    check_min_per_class(raw, config.min_per_class)
    items = assign_splits(raw, test_fraction=config.test_fraction, val_fraction=config.val_fraction)
    check_training_splits(items, class_names(items))
    if not split_items(items, VAL):
        raise TooFewImages("The validation split is empty; add images or raise the validation fraction")
    return items


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
    classes = class_names(items)
    targets = {split: np.array([classes.index(i.label) for i in split_items(items, split)], dtype=int)
               for split in (TRAIN, VAL, TEST)}
    train_mode = _train_head if config.mode == KIND_HEAD else _train_finetune
    outcome = train_mode(config, items, classes, progress)

    temperature = fit_temperature(outcome.val_logits, targets[VAL])
    val = classification_metrics(softmax(outcome.val_logits, temperature), targets[VAL], classes)
    test_before = classification_metrics(softmax(outcome.test_logits), targets[TEST], classes)
    test = classification_metrics(softmax(outcome.test_logits, temperature), targets[TEST], classes)
    seconds = time.perf_counter() - started
    counts = {f"n_{split}": len(targets[split]) for split in (TRAIN, VAL, TEST)}
    summary = {
        "mode": config.mode, "backbone": config.backbone,
        "accuracy": round(test.accuracy, 4), "macro_f1": round(test.macro_f1, 4),
        "ece_before": round(test_before.ece, 4), "ece_after": round(test.ece, 4),
        "nll_before": round(test_before.nll, 4), "nll_after": round(test.nll, 4),
        "temperature": round(temperature, 4),
        "val_accuracy": round(val.accuracy, 4), "val_macro_f1": round(val.macro_f1, 4),
        **counts, "classes": len(classes), "tta": config.use_tta, "seed": config.seed,
        **outcome.extra, "seconds": round(seconds, 2), "model_dir": str(config.out),
    }
    card = ModelCard(
        kind=config.mode,
        backbone=config.backbone,
        classes=classes,
        preprocessing=outcome.preprocessing,
        temperature=temperature,
        tta=config.use_tta,
        files={name: "" for name in outcome.weights},  # write_model_dir fills in the checksums
        metrics={"test": test.to_dict(), "val": val.to_dict(), "test_before_temperature": test_before.to_dict(),
                 "summary": summary},
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


# --- head: a linear layer on cached embeddings ---------------------------------------------

def _train_head(config: TrainConfig, items: list[Item], classes: tuple[str, ...], progress: Progress) -> _Outcome:
    started = time.perf_counter()
    ordered = split_items(items, TRAIN) + split_items(items, VAL) + split_items(items, TEST)
    features = embed_items(ordered, backbone=config.backbone, tta=config.use_tta, cache_dir=config.cache_dir,
                           batch_size=config.batch_size, device=config.device, weights_dir=config.weights_dir,
                           progress=lambda done, total: progress(ProgressEvent("embed", done, total)))
    embed_seconds = time.perf_counter() - started
    n_train, n_val = len(split_items(items, TRAIN)), len(split_items(items, VAL))
    x = {TRAIN: features[:n_train], VAL: features[n_train:n_train + n_val], TEST: features[n_train + n_val:]}
    y = {split: np.array([classes.index(i.label) for i in split_items(items, split)], dtype=int) for split in x}

    started = time.perf_counter()
    progress(ProgressEvent("fit", 0, 1))
    head = fit_head(x[TRAIN], y[TRAIN], x[VAL], y[VAL], len(classes), grid=tuple(config.weight_decays))
    fit_seconds = time.perf_counter() - started
    progress(ProgressEvent("fit", 1, 1, metrics={"weight_decay": head.weight_decay}))
    return _Outcome(
        weights={"head.pt": head.layer.state_dict()},
        preprocessing=get_spec(config.backbone).preprocessing,
        val_logits=linear_logits(head.layer, x[VAL]),
        test_logits=linear_logits(head.layer, x[TEST]),
        history=[asdict(c) for c in head.candidates],
        extra={"weight_decay": head.weight_decay, "embed_seconds": round(embed_seconds, 2),
               "fit_seconds": round(fit_seconds, 3)},
    )


# --- finetune: the whole network ------------------------------------------------------------

def train_transform(preprocessing: Preprocessing, augment: str = "strong") -> v2.Compose:
    """strong: torchvision's reference recipe; light: a milder crop and the flip only."""
    interpolation = InterpolationMode(preprocessing.interpolation)
    if augment == "light":
        geometric = [v2.RandomResizedCrop(preprocessing.crop_size, scale=(0.25, 1.0), interpolation=interpolation,
                                          antialias=True), v2.RandomHorizontalFlip()]
    else:
        geometric = [v2.RandomResizedCrop(preprocessing.crop_size, interpolation=interpolation, antialias=True),
                     v2.RandomHorizontalFlip(), v2.TrivialAugmentWide(interpolation=interpolation)]
    return v2.Compose([
        *geometric,
        v2.PILToTensor(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(preprocessing.mean), std=list(preprocessing.std)),
    ])


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """The learning-rate factor at each step: linear up to 1, then a cosine down to 0."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


def amp_dtype_for(device: torch.device) -> torch.dtype | None:
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def train_one_epoch(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    data_loader: DataLoader, device: torch.device, *,
                    lr_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
                    scaler: torch.amp.GradScaler | None = None, amp_dtype: torch.dtype | None = None,
                    on_step: Callable[[int, int, float], None] | None = None,
                    freeze_norm_stats: bool = False) -> dict:
    """One pass over data_loader; the mean loss and accuracy, and images per second."""
    model.train()
    if freeze_norm_stats:  # normalise with the running statistics, and leave them as they are
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
    started = time.perf_counter()
    total_loss, correct, seen = 0.0, 0, 0
    channels_last = device.type == "cuda"
    for step, (images, targets) in enumerate(data_loader):
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = targets.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            _, logits = model(images)
            loss = criterion(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None and scaler.is_enabled():
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if lr_scheduler is not None:
            lr_scheduler.step()
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"the training loss became {loss.item()} at step {step}; lower the learning rate")
        total_loss += loss.item() * len(targets)
        correct += int((logits.argmax(1) == targets).sum())
        seen += len(targets)
        if on_step:
            on_step(step + 1, len(data_loader), loss.item())
    seconds = time.perf_counter() - started
    return {"train_loss": total_loss / max(seen, 1), "train_accuracy": correct / max(seen, 1),
            "images_per_s": seen / seconds if seconds else 0.0, "seconds": seconds}


@torch.inference_mode()
def evaluate(model: nn.Module, data_loader: DataLoader, device: torch.device, *,
             amp_dtype: torch.dtype | None = None, tta: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(logits, targets) over data_loader, in its order; with tta, logits averaged with the mirror's."""
    model.eval()
    all_logits, all_targets = [], []
    for images, targets in data_loader:
        images = images.to(device, non_blocking=True)
        if device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            _, logits = model(images)
            if tta:
                logits = (logits + model(torch.flip(images, dims=[3]))[1]) / 2
        all_logits.append(logits.float().cpu())
        all_targets.append(targets)
    if not all_logits:
        return np.zeros((0, model.head.out_features), np.float32), np.zeros(0, int)
    return torch.cat(all_logits).numpy(), torch.cat(all_targets).numpy()


def _loader(dataset: ImageDataset, config: TrainConfig, *, shuffle: bool, generator: torch.Generator | None = None):
    device = torch.device(config.device)
    workers = config.workers
    if workers is None:  # decoding keeps up with a CPU's training steps, not with a GPU's
        workers = min(8, os.cpu_count() or 1) if device.type == "cuda" else 0
    # BatchNorm cannot train on a batch of one image: drop a last batch that would be that.
    drop_last = shuffle and len(dataset) % config.batch_size == 1
    return DataLoader(dataset, batch_size=config.batch_size, shuffle=shuffle, generator=generator,
                      num_workers=workers, pin_memory=device.type == "cuda", drop_last=drop_last,
                      persistent_workers=workers > 0)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    # As torchvision's reference does with --norm-weight-decay 0: no decay on biases and norms.
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _train_finetune(config: TrainConfig, items: list[Item], classes: tuple[str, ...], progress: Progress) -> _Outcome:
    device = torch.device(config.device)
    spec = get_spec(config.backbone)
    preprocessing = spec.preprocessing
    if config.image_size:
        scale = spec.preprocessing.resize_size / spec.preprocessing.crop_size
        preprocessing = replace(preprocessing, crop_size=config.image_size,
                                resize_size=round(config.image_size * scale))
    backbone = load_backbone(config.backbone, weights_dir=config.weights_dir)
    model = ImageClassifier(backbone.trunk, spec.feature_dim, len(classes)).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    snapshot = snapshot_sha256(items)
    train_items, val_items, test_items = (split_items(items, s) for s in (TRAIN, VAL, TEST))

    eval_transform = preprocessing.transform()
    train_ds = ImageDataset(train_items, classes, train_transform(preprocessing, config.finetune_augment))
    generator = torch.Generator()
    train_loader = _loader(train_ds, config, shuffle=True, generator=generator)
    val_loader = _loader(ImageDataset(val_items, classes, eval_transform), config, shuffle=False)
    test_loader = _loader(ImageDataset(test_items, classes, eval_transform), config, shuffle=False)

    criterion = nn.CrossEntropyLoss(label_smoothing=config.finetune_label_smoothing)
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.finetune_lr)
    steps_per_epoch = len(train_loader)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = min(config.warmup_epochs * steps_per_epoch, total_steps // 2) or 1
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, warmup_steps))
    amp_dtype = amp_dtype_for(device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    state = {"epoch": 0, "best_f1": -1.0, "best_epoch": 0, "best_model": None, "history": []}
    checkpoint_path = config.checkpoint_path
    if config.resume and checkpoint_path.is_file():
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        if checkpoint["classes"] != list(classes) or checkpoint["snapshot_sha256"] != snapshot:
            raise ValueError(f"{checkpoint_path} was made for another dataset snapshot or class list; "
                             "delete it, or train without --resume")
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        torch.set_rng_state(checkpoint["torch_rng"])
        if device.type == "cuda" and checkpoint.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(checkpoint["cuda_rng"], device)
        state = {k: checkpoint[k] for k in state}
    elif config.init_head:
        probe = _init_head_from_probe(model, backbone, config, train_items, val_items, classes, preprocessing,
                                      progress)
        # The probe is the epoch-0 candidate: fine-tuning is kept only where validation says it helped.
        val_logits, val_targets = evaluate(model, val_loader, device, amp_dtype=amp_dtype, tta=config.use_tta)
        val = classification_metrics(softmax(val_logits), val_targets, classes)
        row = {"epoch": 0, "init": "linear_probe", "weight_decay": probe.weight_decay,
               "val_accuracy": round(val.accuracy, 4), "val_macro_f1": round(val.macro_f1, 4),
               "val_nll": round(val.nll, 4)}
        state.update(best_f1=val.macro_f1, best_epoch=0, history=[row],
                     best_model={k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
        progress(ProgressEvent("fit", 1, 1, metrics=row))

    resumed_from = state["epoch"]
    for epoch in range(state["epoch"], config.epochs):
        if epoch - state["best_epoch"] >= config.patience and state["best_model"] is not None:
            break
        # The order of an epoch depends only on (seed, epoch), so a resumed run replays it.
        generator.manual_seed(config.seed * 100_003 + epoch)
        row = train_one_epoch(
            model, criterion, optimizer, train_loader, device, lr_scheduler=lr_scheduler, scaler=scaler,
            amp_dtype=amp_dtype, freeze_norm_stats=config.freeze_norm_stats,
            on_step=lambda step, steps, loss, epoch=epoch: progress(ProgressEvent(
                "train", step, steps, epoch=epoch + 1, epochs=config.epochs, metrics={"loss": loss})),
        )
        val_logits, val_targets = evaluate(model, val_loader, device, amp_dtype=amp_dtype, tta=config.use_tta)
        val = classification_metrics(softmax(val_logits), val_targets, classes)
        row = {"epoch": epoch + 1, **{k: round(v, 4) for k, v in row.items()},
               "val_accuracy": round(val.accuracy, 4), "val_macro_f1": round(val.macro_f1, 4),
               "val_nll": round(val.nll, 4), "lr": optimizer.param_groups[0]["lr"]}
        state["history"].append(row)
        if val.macro_f1 > state["best_f1"]:
            state.update(best_f1=val.macro_f1, best_epoch=epoch + 1,
                         best_model={k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
        state["epoch"] = epoch + 1
        save_atomically({
            **state, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "lr_scheduler": lr_scheduler.state_dict(), "scaler": scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None, "classes": list(classes), "snapshot_sha256": snapshot,
            "config": config.to_dict(),
        }, checkpoint_path)
        progress(ProgressEvent("epoch", epoch + 1, config.epochs, epoch=epoch + 1, epochs=config.epochs, metrics=row))

    model.load_state_dict(state["best_model"])
    progress(ProgressEvent("evaluate", 0, 2))
    val_logits, _ = evaluate(model, val_loader, device, amp_dtype=amp_dtype, tta=config.use_tta)
    test_logits, _ = evaluate(model, test_loader, device, amp_dtype=amp_dtype, tta=config.use_tta)
    progress(ProgressEvent("evaluate", 2, 2))
    model = model.to("cpu", memory_format=torch.contiguous_format)
    ran = [row for row in state["history"] if row["epoch"] >= 1]
    init = "linear_probe" if config.init_head else "random"
    recipe = {"init": init, "lr": config.finetune_lr, "label_smoothing": config.finetune_label_smoothing,
              "augment": config.finetune_augment, "freeze_norm_stats": config.freeze_norm_stats}
    return _Outcome(
        weights={"model.pt": {k: v.contiguous() for k, v in model.state_dict().items()}},
        preprocessing=preprocessing,
        val_logits=val_logits,
        test_logits=test_logits,
        history=state["history"],
        training=recipe,
        extra={**recipe, "epochs_run": len(ran), "resumed_from_epoch": resumed_from, "best_epoch": state["best_epoch"],
               "images_per_s": round(float(np.mean([r["images_per_s"] for r in ran])), 2) if ran else None,
               "epoch_seconds": round(float(np.mean([r["seconds"] for r in ran])), 2) if ran else None,
               "checkpoint": str(checkpoint_path)},
    )


def _init_head_from_probe(model: ImageClassifier, backbone, config: TrainConfig, train_items: list[Item],
                          val_items: list[Item], classes: tuple[str, ...], preprocessing: Preprocessing,
                          progress: Progress):
    """LP-FT: fit the linear head exactly as head mode does (plain features of the backbone
    with its ImageNet weights, the weight decay chosen on validation NLL) and start the
    network's classifier from it, weights and bias as they are (temperature is fitted after
    training, on the final network, like for any other). A random head's large early gradients
    would otherwise distort the pretrained features before the head has learnt anything."""
    features = embed_items(train_items + val_items, backbone=config.backbone, cache_dir=config.cache_dir,
                           batch_size=config.batch_size, device=config.device, model=backbone,
                           preprocessing=preprocessing,
                           progress=lambda done, total: progress(ProgressEvent("embed", done, total)))
    targets = np.array([classes.index(i.label) for i in train_items + val_items], dtype=int)
    n = len(train_items)
    progress(ProgressEvent("fit", 0, 1))
    head = fit_head(features[:n], targets[:n], features[n:], targets[n:], len(classes),
                    grid=tuple(config.weight_decays))
    with torch.no_grad():
        model.head.weight.copy_(head.layer.weight)
        model.head.bias.copy_(head.layer.bias)
    return head


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
    parser.add_argument("--min-per-class", type=int, default=TrainConfig.min_per_class)
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
