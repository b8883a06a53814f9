"""A linear classifier on cached embeddings: full-batch L-BFGS, L2 strength chosen on validation.

Features are standardised with the training mean and deviation while fitting, so one grid of
weight decays suits every backbone; the scaling is then folded into the layer, so the saved
head is a plain nn.Linear on raw embeddings.

scikit-learn's LogisticRegression was measured against it (5-fold CV on the non-test part of
caltech101-animals, flip-averaged Lite0 features): 96.7-97.0% across our grid against 96.9%
across C in 0.01..1, at a similar time per setting; this one warm-starts along the grid and
needs no conversion to serve.
"""

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from .backbones import get_spec
from .config import WEIGHT_DECAY_GRID, Outcome, Progress, ProgressEvent, TrainConfig
from .datasets import TEST, TRAIN, VAL, Item, split_items
from .embed import embed_items
from .metrics import negative_log_likelihood, softmax

PATIENCE = 2  # stop the grid after this many weaker settings in a row did worse


@dataclass(frozen=True)
class HeadCandidate:
    weight_decay: float
    val_nll: float
    val_accuracy: float


@dataclass
class HeadFit:
    layer: nn.Linear
    weight_decay: float
    candidates: list[HeadCandidate]


def fit_linear(features: np.ndarray, targets: np.ndarray, num_classes: int, *, weight_decay: float,
               max_iter: int = 200, init: nn.Linear | None = None) -> nn.Linear:
    """argmin of mean cross-entropy + weight_decay / 2 * |W|^2 over a linear layer on standardised features."""
    x = torch.as_tensor(features, dtype=torch.float32)
    y = torch.as_tensor(targets, dtype=torch.long)
    mean = x.mean(0)
    std = x.std(0).clamp_min(1e-6)
    z = (x - mean) / std
    layer = nn.Linear(x.shape[1], num_classes)
    with torch.no_grad():
        if init is not None:
            # init is on raw features; unfold the standardisation to start from the same function.
            layer.weight.copy_(init.weight * std)
            layer.bias.copy_(init.bias + init.weight @ mean)
        else:
            layer.weight.zero_()
            layer.bias.zero_()
    optimizer = torch.optim.LBFGS(layer.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(layer(z), y) + 0.5 * weight_decay * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    folded = nn.Linear(x.shape[1], num_classes)
    with torch.no_grad():
        folded.weight.copy_(layer.weight / std)
        folded.bias.copy_(layer.bias - folded.weight @ mean)
    return folded


def linear_logits(layer: nn.Linear, features: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return layer(torch.as_tensor(features, dtype=torch.float32)).numpy()


def fit_head(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, num_classes: int,
             *, grid: tuple[float, ...] = WEIGHT_DECAY_GRID) -> HeadFit:
    """The weight decay with the lowest validation NLL (after temperature scaling), and its layer.

    NLL rather than accuracy: a validation split of a hundred images ties many settings on
    accuracy, while NLL still tells them apart. Temperature is fitted per candidate so the
    choice rewards how well the classes are separated, not how sharp the raw outputs are.
    """
    from .metrics import fit_temperature

    if len(val_y) == 0:
        raise ValueError("choosing the weight decay needs a validation split; it is empty")
    candidates, layers = [], []
    previous = None
    best = 0
    for wd in sorted(grid, reverse=True):  # strongest first: each fit warm-starts the next
        layer = fit_linear(train_x, train_y, num_classes, weight_decay=wd, init=previous)
        previous = layer
        logits = linear_logits(layer, val_x)
        probs = softmax(logits, fit_temperature(logits, val_y))
        candidates.append(HeadCandidate(wd, negative_log_likelihood(probs, val_y),
                                        float((probs.argmax(1) == val_y).mean())))
        layers.append(layer)
        if candidates[-1].val_nll < candidates[best].val_nll:
            best = len(candidates) - 1
        elif len(candidates) - 1 - best >= PATIENCE:
            break  # validation NLL is U-shaped in the weight decay: past the bottom it only rises
    return HeadFit(layer=layers[best], weight_decay=candidates[best].weight_decay, candidates=candidates)


# --- head mode of the trainer ------------------------------------------------------------------


def train_head(config: TrainConfig, items: list[Item], classes: tuple[str, ...], progress: Progress) -> Outcome:
    """Fits on the items of `classes` (the learned ones); scores every val and test item."""
    started = time.perf_counter()
    ordered = split_items(items, TRAIN) + split_items(items, VAL) + split_items(items, TEST)
    features = embed_items(ordered, backbone=config.backbone, tta=config.use_tta, cache_dir=config.cache_dir,
                           batch_size=config.batch_size, device=config.device, weights_dir=config.weights_dir,
                           progress=lambda done, total: progress(ProgressEvent("embed", done, total)))
    embed_seconds = time.perf_counter() - started
    n_train, n_val = len(split_items(items, TRAIN)), len(split_items(items, VAL))
    x = {TRAIN: features[:n_train], VAL: features[n_train:n_train + n_val], TEST: features[n_train + n_val:]}
    known = {split: np.array([i.label in classes for i in split_items(items, split)], dtype=bool) for split in x}
    y = {split: np.array([classes.index(i.label) for i in split_items(items, split) if i.label in classes],
                         dtype=int) for split in x}

    started = time.perf_counter()
    progress(ProgressEvent("fit", 0, 1))
    head = fit_head(x[TRAIN][known[TRAIN]], y[TRAIN], x[VAL][known[VAL]], y[VAL], len(classes),
                    grid=tuple(config.weight_decays))
    fit_seconds = time.perf_counter() - started
    progress(ProgressEvent("fit", 1, 1, metrics={"weight_decay": head.weight_decay}))
    return Outcome(
        weights={"head.pt": head.layer.state_dict()},
        preprocessing=get_spec(config.backbone).preprocessing,
        val_logits=linear_logits(head.layer, x[VAL]),
        test_logits=linear_logits(head.layer, x[TEST]),
        val_features=x[VAL], test_features=x[TEST],
        history=[asdict(c) for c in head.candidates],
        extra={"weight_decay": head.weight_decay, "embed_seconds": round(embed_seconds, 2),
               "fit_seconds": round(fit_seconds, 3)},
    )
