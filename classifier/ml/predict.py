"""Predictions from a model card: load once per process, then predict many times.

A model card is the plain-data description of one model version: its backbone, its classes
in order, its preprocessing and its head. The Predictor refuses a card whose preprocessing
is missing, so a version can never be served with a transform it was not made for.
"""

import time
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .backbones import get_spec, load_backbone
from .preprocessing import Preprocessing
from .zero_shot import OTHER, ZeroShotHead

KIND_ZERO_SHOT = "zero_shot"
KINDS = (KIND_ZERO_SHOT,)


@dataclass(frozen=True)
class ModelCard:
    kind: str
    backbone: str
    classes: tuple[str, ...]  # output order of the model, "other" included where it exists
    preprocessing: Preprocessing
    imagenet_map: dict[str, list[int]] = field(default_factory=dict)  # zero_shot only

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Unknown model kind {self.kind!r}; choose one of: {', '.join(KINDS)}")
        get_spec(self.backbone)  # fails loudly, naming the valid backbones

    @classmethod
    def zero_shot(cls, *, backbone: str, class_map: dict[str, list[int]]) -> "ModelCard":
        names = tuple(sorted(class_map))
        return cls(
            kind=KIND_ZERO_SHOT,
            backbone=backbone,
            classes=names + (OTHER,),
            preprocessing=get_spec(backbone).preprocessing,
            imagenet_map={name: sorted(int(i) for i in class_map[name]) for name in names},
        )

    def to_dict(self) -> dict:
        data = asdict(self)
        data["classes"] = list(self.classes)
        data["preprocessing"] = self.preprocessing.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "ModelCard":
        return cls(
            kind=data["kind"],
            backbone=data["backbone"],
            classes=tuple(data["classes"]),
            preprocessing=Preprocessing.from_dict(data["preprocessing"]),
            imagenet_map={k: list(v) for k, v in data.get("imagenet_map", {}).items()},
        )


@dataclass(frozen=True)
class Scored:
    label: str
    p: float


@dataclass(frozen=True)
class PredictionResult:
    top: list[Scored]
    probabilities: list[float]  # in card.classes order
    embedding: np.ndarray  # float32 pooled backbone features
    duration_ms: float  # this image's share of the batch's model time

    @property
    def label(self) -> str:
        return self.top[0].label

    @property
    def confidence(self) -> float:
        return self.top[0].p


class Predictor:
    """One card's network, ready to predict. Build once per process; it is not cheap."""

    def __init__(self, card: ModelCard, *, device: str = "cpu", weights_dir: str | None = None):
        self.card = card
        self.device = torch.device(device)
        self.backbone = load_backbone(card.backbone, weights_dir=weights_dir).to(self.device)
        if card.kind == KIND_ZERO_SHOT:
            self.head = ZeroShotHead(card.classes[:-1], card.imagenet_map).to(self.device)
        self.transform = card.preprocessing.transform()

    @property
    def backend(self) -> str:
        return f"torch-{self.device.type}"

    @torch.inference_mode()
    def predict(self, images: Sequence[Image.Image], *, top_k: int = 5) -> list[PredictionResult]:
        if not images:
            return []
        batch = torch.stack([self.transform(im) for im in images]).to(self.device)
        started = time.perf_counter()
        features, logits = self.backbone(batch)
        probs = self.head(logits)
        probs = probs.cpu().numpy().astype(np.float64)
        features = features.float().cpu().numpy()
        per_image_ms = (time.perf_counter() - started) * 1000.0 / len(images)
        k = min(top_k, len(self.card.classes))
        results = []
        for row, feature in zip(probs, features):
            order = np.argsort(-row, kind="stable")[:k]
            results.append(
                PredictionResult(
                    top=[Scored(self.card.classes[i], float(row[i])) for i in order],
                    probabilities=[float(p) for p in row],
                    embedding=feature.astype(np.float32),
                    duration_ms=per_image_ms,
                )
            )
        return results
