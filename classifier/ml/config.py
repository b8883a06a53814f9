"""What a training run is asked to do (TrainConfig), what it reports while it runs
(ProgressEvent) and what it gives back (TrainResult; Outcome from each mode)."""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .backbones import get_spec
from .cards import KIND_FINETUNE, KIND_HEAD, ModelCard
from .datasets import DEFAULT_TEST_FRACTION, DEFAULT_VAL_FRACTION, Item
from .preprocessing import Preprocessing

# Head mode: L2 strengths tried, strongest first (head.fit_head).
WEIGHT_DECAY_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3)
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
    min_per_class: int = 5  # labels a class needs to be learned; the others are served by zero-shot
    # The project's classes and their ImageNet indices: those not learned keep their zero-shot
    # score (coverage.py). None: the labels' own names, mapped with the shipped table.
    class_map: dict[str, list[int]] | None = None
    zero_shot_temperature: float | None = None  # None: the backbone's, fitted on Caltech (zero_shot_temperature)
    tta: bool | None = None  # flip-averaged features; None: on for head, off for finetune
    overwrite: bool = False
    # head
    weight_decays: tuple[float, ...] = WEIGHT_DECAY_GRID
    # After the test split has scored the recipe, serve a head refitted on every label, test
    # included. The app keeps it off: its gate scores the version on that test split.
    refit_on_all: bool = False
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
class Outcome:
    """What a mode hands back: everything else (metrics, card, files) is shared."""
    weights: dict[str, dict]
    preprocessing: Preprocessing
    val_logits: np.ndarray  # the head's, for the val and test items the mode was given
    test_logits: np.ndarray
    history: list[dict]
    extra: dict
    val_features: np.ndarray | None = None  # their pooled features: the zero-shot part scores them
    test_features: np.ndarray | None = None
    # Head mode: the images whose out-of-fold predictions stand in for validation (val_logits are
    # theirs), and the zero-shot prior's weight chosen by cross-validation. None: the val split.
    validation: list | None = None
    prior_weight: float = 0.0
    training: dict = field(default_factory=dict)  # recorded in the card's training section
