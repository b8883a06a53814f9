"""Finetune mode: the whole network, following torchvision's classification reference.

RandomResizedCrop, flip and TrivialAugmentWide, label smoothing, AdamW with linear warm-up then
cosine decay, AMP and channels_last on CUDA, checkpoints (a plain dict) after every epoch that
resume continues from. By default it starts from the linear probe that head mode fits (LP-FT).
"""

import math
import os
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision.transforms import InterpolationMode, v2

from .artifacts import save_atomically
from .backbones import get_spec, load_backbone
from .config import Outcome, Progress, ProgressEvent, TrainConfig
from .datasets import TEST, TRAIN, VAL, ImageDataset, Item, snapshot_sha256, split_items
from .embed import embed_items
from .head import fit_recipe
from .metrics import classification_metrics, softmax
from .networks import ImageClassifier
from .preprocessing import Preprocessing


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
             amp_dtype: torch.dtype | None = None, tta: bool = False, features: list | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """(logits, targets) over data_loader, in its order; with tta, logits averaged with the mirror's.
    A `features` list gets the pooled features too (averaged likewise), one array per batch."""
    model.eval()
    all_logits, all_targets = [], []
    for images, targets in data_loader:
        images = images.to(device, non_blocking=True)
        if device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            pooled, logits = model(images)
            if tta:
                flipped_pooled, flipped_logits = model(torch.flip(images, dims=[3]))
                pooled, logits = (pooled + flipped_pooled) / 2, (logits + flipped_logits) / 2
        all_logits.append(logits.float().cpu())
        if features is not None:
            features.append(pooled.float().cpu().numpy())
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


@dataclass
class _Session:
    """Everything one fine-tune holds while it runs; `state` is what a checkpoint keeps."""
    config: TrainConfig
    classes: tuple[str, ...]
    device: torch.device
    preprocessing: Preprocessing
    backbone: object
    model: nn.Module
    loaders: dict[str, DataLoader]
    generator: torch.Generator
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    lr_scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    snapshot: str
    state: dict = field(default_factory=lambda: {"epoch": 0, "best_f1": -1.0, "best_epoch": 0, "best_model": None,
                                                  "history": []})

    def validate(self) -> tuple[object, np.ndarray]:
        logits, targets = evaluate(self.model, self.loaders[VAL], self.device, amp_dtype=self.amp_dtype,
                                   tta=self.config.use_tta)
        return classification_metrics(softmax(logits), targets, self.classes), logits

    def keep_if_best(self, macro_f1: float, epoch: int) -> None:
        if macro_f1 > self.state["best_f1"]:
            self.state.update(best_f1=macro_f1, best_epoch=epoch,
                              best_model={k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()})


def _preprocessing(config: TrainConfig) -> Preprocessing:
    spec = get_spec(config.backbone)
    if not config.image_size:
        return spec.preprocessing
    scale = spec.preprocessing.resize_size / spec.preprocessing.crop_size
    return replace(spec.preprocessing, crop_size=config.image_size, resize_size=round(config.image_size * scale))


def _session(config: TrainConfig, items: list[Item], classes: tuple[str, ...]) -> _Session:
    device = torch.device(config.device)
    spec = get_spec(config.backbone)
    preprocessing = _preprocessing(config)
    backbone = load_backbone(config.backbone, weights_dir=config.weights_dir)
    model = ImageClassifier(backbone.trunk, spec.feature_dim, len(classes)).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    eval_transform = preprocessing.transform()
    generator = torch.Generator()
    train_ds = ImageDataset(split_items(items, TRAIN), classes, train_transform(preprocessing, config.finetune_augment))
    loaders = {TRAIN: _loader(train_ds, config, shuffle=True, generator=generator)}
    for split in (VAL, TEST):
        dataset = ImageDataset(split_items(items, split), classes, eval_transform)
        loaders[split] = _loader(dataset, config, shuffle=False)
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.finetune_lr)
    total_steps = len(loaders[TRAIN]) * config.epochs
    warmup_steps = min(config.warmup_epochs * len(loaders[TRAIN]), total_steps // 2) or 1
    amp_dtype = amp_dtype_for(device)
    return _Session(
        config=config, classes=classes, device=device, preprocessing=preprocessing, backbone=backbone, model=model,
        loaders=loaders, generator=generator,
        criterion=nn.CrossEntropyLoss(label_smoothing=config.finetune_label_smoothing), optimizer=optimizer,
        lr_scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, warmup_steps)),
        scaler=torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16), amp_dtype=amp_dtype,
        snapshot=snapshot_sha256(items),
    )


def _resume(session: _Session) -> None:
    path = session.config.checkpoint_path
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if checkpoint["classes"] != list(session.classes) or checkpoint["snapshot_sha256"] != session.snapshot:
        raise ValueError(f"{path} was made for another dataset snapshot or class list; "
                         "delete it, or train without --resume")
    session.model.load_state_dict(checkpoint["model"])
    session.optimizer.load_state_dict(checkpoint["optimizer"])
    session.lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
    session.scaler.load_state_dict(checkpoint["scaler"])
    torch.set_rng_state(checkpoint["torch_rng"])
    if session.device.type == "cuda" and checkpoint.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(checkpoint["cuda_rng"], session.device)
    session.state = {k: checkpoint[k] for k in session.state}


def _start_from_probe(session: _Session, items: list[Item], progress: Progress) -> None:
    probe = _init_head_from_probe(session.model, session.backbone, session.config, split_items(items, TRAIN),
                                  split_items(items, VAL), session.classes, session.preprocessing, progress)
    # The probe is the epoch-0 candidate: fine-tuning is kept only where validation says it helped.
    val, _ = session.validate()
    row = {"epoch": 0, "init": "linear_probe", "weight_decay": probe.weight_decay,
           "val_accuracy": round(val.accuracy, 4), "val_macro_f1": round(val.macro_f1, 4),
           "val_nll": round(val.nll, 4)}
    session.state["history"] = [row]
    session.keep_if_best(val.macro_f1, 0)
    progress(ProgressEvent("fit", 1, 1, metrics=row))


def _epoch(session: _Session, epoch: int, progress: Progress) -> dict:
    config = session.config
    # The order of an epoch depends only on (seed, epoch), so a resumed run replays it.
    session.generator.manual_seed(config.seed * 100_003 + epoch)
    row = train_one_epoch(
        session.model, session.criterion, session.optimizer, session.loaders[TRAIN], session.device,
        lr_scheduler=session.lr_scheduler, scaler=session.scaler, amp_dtype=session.amp_dtype,
        freeze_norm_stats=config.freeze_norm_stats,
        on_step=lambda step, steps, loss: progress(ProgressEvent(
            "train", step, steps, epoch=epoch + 1, epochs=config.epochs, metrics={"loss": loss})),
    )
    val, _ = session.validate()
    row = {"epoch": epoch + 1, **{k: round(v, 4) for k, v in row.items()},
           "val_accuracy": round(val.accuracy, 4), "val_macro_f1": round(val.macro_f1, 4),
           "val_nll": round(val.nll, 4), "lr": session.optimizer.param_groups[0]["lr"]}
    session.state["history"].append(row)
    session.keep_if_best(val.macro_f1, epoch + 1)
    session.state["epoch"] = epoch + 1
    _save_checkpoint(session)
    return row


def _save_checkpoint(session: _Session) -> None:
    device = session.device
    save_atomically({
        **session.state, "model": session.model.state_dict(), "optimizer": session.optimizer.state_dict(),
        "lr_scheduler": session.lr_scheduler.state_dict(), "scaler": session.scaler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "classes": list(session.classes), "snapshot_sha256": session.snapshot, "config": session.config.to_dict(),
    }, session.config.checkpoint_path)


def train_finetune(config: TrainConfig, items: list[Item], classes: tuple[str, ...], progress: Progress) -> Outcome:
    session = _session(config, items, classes)
    if config.resume and config.checkpoint_path.is_file():
        _resume(session)
    elif config.init_head:
        _start_from_probe(session, items, progress)
    resumed_from = session.state["epoch"]
    for epoch in range(session.state["epoch"], config.epochs):
        if epoch - session.state["best_epoch"] >= config.patience and session.state["best_model"] is not None:
            break
        row = _epoch(session, epoch, progress)
        progress(ProgressEvent("epoch", epoch + 1, config.epochs, epoch=epoch + 1, epochs=config.epochs, metrics=row))
    return _outcome(session, resumed_from, progress)


def _outcome(session: _Session, resumed_from: int, progress: Progress) -> Outcome:
    config, model, state = session.config, session.model, session.state
    model.load_state_dict(state["best_model"])
    progress(ProgressEvent("evaluate", 0, 2))
    val_features, test_features = [], []  # the zero-shot part of the served model scores them
    val_logits, _ = evaluate(model, session.loaders[VAL], session.device, amp_dtype=session.amp_dtype,
                             tta=config.use_tta, features=val_features)
    test_logits, _ = evaluate(model, session.loaders[TEST], session.device, amp_dtype=session.amp_dtype,
                              tta=config.use_tta, features=test_features)
    progress(ProgressEvent("evaluate", 2, 2))
    model = model.to("cpu", memory_format=torch.contiguous_format)
    ran = [row for row in state["history"] if row["epoch"] >= 1]
    recipe = {"init": "linear_probe" if config.init_head else "random", "lr": config.finetune_lr,
              "label_smoothing": config.finetune_label_smoothing, "augment": config.finetune_augment,
              "freeze_norm_stats": config.freeze_norm_stats}
    return Outcome(
        weights={"model.pt": {k: v.contiguous() for k, v in model.state_dict().items()}},
        preprocessing=session.preprocessing, val_logits=val_logits, test_logits=test_logits,
        val_features=_stacked(val_features), test_features=_stacked(test_features),
        history=state["history"], training=recipe,
        extra={**recipe, "epochs_run": len(ran), "resumed_from_epoch": resumed_from, "best_epoch": state["best_epoch"],
               "images_per_s": round(float(np.mean([r["images_per_s"] for r in ran])), 2) if ran else None,
               "epoch_seconds": round(float(np.mean([r["seconds"] for r in ran])), 2) if ran else None,
               "checkpoint": str(config.checkpoint_path)},
    )


def _stacked(batches: list) -> np.ndarray:
    return np.concatenate(batches) if batches else np.zeros((0, 0), dtype=np.float32)


def _init_head_from_probe(model: ImageClassifier, backbone, config: TrainConfig, train_items: list[Item],
                          val_items: list[Item], classes: tuple[str, ...], preprocessing: Preprocessing,
                          progress: Progress):
    """LP-FT: fit the linear head exactly as head mode does (plain features of the backbone
    with its ImageNet weights, the weight decay chosen by cross-validation) and start the
    network's classifier from it, weights and bias as they are (temperature is fitted after
    training, on the final network, like for any other). A random head's large early gradients
    would otherwise distort the pretrained features before the head has learnt anything."""
    features = embed_items(train_items + val_items, backbone=config.backbone, cache_dir=config.cache_dir,
                           batch_size=config.batch_size, device=config.device, model=backbone,
                           preprocessing=preprocessing,
                           progress=lambda done, total: progress(ProgressEvent("embed", done, total)))
    targets = np.array([classes.index(i.label) for i in train_items + val_items], dtype=int)
    progress(ProgressEvent("fit", 0, 1))
    # The recipe head mode fits (cross-validation over train and validation; no zero-shot prior,
    # which the network's classifier cannot hold), so epoch 0 is head mode's probe.
    head = fit_recipe(features, targets, len(classes), grid=tuple(config.weight_decays), seed=config.seed)
    with torch.no_grad():
        model.head.weight.copy_(head.layer.weight)
        model.head.bias.copy_(head.layer.bias)
    return head
