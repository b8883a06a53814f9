"""Model cards: the plain-data description of one model version.

A card names its backbone, its classes in order, its preprocessing and its head (see
predict.py for the kinds). Trained kinds live in a model directory: card.json plus the
weights, each checked against the SHA-256 the card records. No torch here: the web process
reads and writes cards and never runs a model.
"""

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .backbone_specs import get_spec
from .class_map import OTHER
from .preprocessing import Preprocessing

KIND_ZERO_SHOT = "zero_shot"
KIND_HEAD = "head"
KIND_FINETUNE = "finetune"
KINDS = (KIND_ZERO_SHOT, KIND_HEAD, KIND_FINETUNE)
WEIGHTS_FILES = {KIND_HEAD: "head.pt", KIND_FINETUNE: "model.pt"}
CARD_FILE = "card.json"

# The zero-shot temperature of each backbone, fitted once on the shared Caltech animals by
# benchmarks/zero_shot_temperature.py --top-k 0 (which prints it and the ECE before and after):
# Lite0 1.0508 on the whole short side (ECE 0.016 -> 0.011; 1.0748 on TF's eval crop before),
# Lite1 0.8372 (0.033 -> 0.012; on the demo photos 0.147 -> 0.114), Lite2 0.9124 (0.016 -> 0.014;
# demo photos 0.187 -> 0.147). A backbone without an entry is served at T = 1.
ZERO_SHOT_TEMPERATURES: dict[str, float] = {"efficientnet_lite0": 1.0508, "efficientnet_lite1": 0.8372,
                                            "efficientnet_lite2": 0.9124}


# How many of an image's most likely ImageNet classes its zero-shot scores count (zero_shot.py);
# new cards pin it, cards without it sum all 1000 as they always did. The temperatures above
# were fitted for the sum over all 1000.
ZERO_SHOT_TOP_K = 5


def zero_shot_temperature(backbone: str) -> float:
    return ZERO_SHOT_TEMPERATURES.get(backbone, 1.0)


class ModelDirError(ValueError):
    """A model directory that is missing, incomplete or does not match its card's checksums."""


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelCard:
    kind: str
    backbone: str
    classes: tuple[str, ...]  # output order of the model, "other" included where it exists
    preprocessing: Preprocessing
    # zero_shot: the mapping; trained kinds: the mapped classes their zero-shot part scores
    imagenet_map: dict[str, list[int]] = field(default_factory=dict)
    # Trained kinds: probabilities are softmax(logits / temperature). zero_shot: the scores'
    # temperature, softmax(log q / temperature) (benchmarks/zero_shot_temperature.py fits it).
    temperature: float = 1.0
    # Trained kinds since every version serves every class (coverage.py, combine.py); empty on
    # older cards, whose head outputs are `classes` themselves:
    head_classes: tuple[str, ...] = ()  # the weights' outputs, in order (the learned classes)
    served: dict[str, dict] = field(default_factory=dict)  # class -> {"how", "labels", "needs"}
    zero_shot_temperature: float = 1.0
    other_bias: float = 0.0  # added to log q(other) where "other" is not learned
    prior_weight: float = 0.0  # of the zero-shot prior added to the head's logits (issue 15)
    zero_shot_top_k: int | None = None  # zero-shot counts each image's top k ImageNet classes; None: all
    tta: bool = False  # features are the mean over the image and its mirror
    files: dict[str, str] = field(default_factory=dict)  # file in the model dir -> its sha256
    metrics: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)  # config, seed, snapshot hash, hardware, seconds, ...

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Unknown model kind {self.kind!r}; choose one of: {', '.join(KINDS)}")
        get_spec(self.backbone)  # fails loudly, naming the valid backbones
        if not (self.temperature > 0 and self.zero_shot_temperature > 0):
            raise ValueError(f"temperatures must be positive, got {self.temperature}, {self.zero_shot_temperature}")
        if self.head_classes and (set(self.head_classes) - set(self.classes) or self.classes[-1:] != (OTHER,)):
            raise ValueError(f"head classes {self.head_classes} must be among the classes {self.classes}, "
                             f"which end with {OTHER!r}")
        if self.zero_shot_top_k is not None and not 1 <= self.zero_shot_top_k <= 1000:
            raise ValueError(f"zero_shot_top_k must be between 1 and 1000, got {self.zero_shot_top_k}")
        if self.kind in WEIGHTS_FILES and WEIGHTS_FILES[self.kind] not in self.files:
            raise ValueError(f"a {self.kind} card must list its weights file {WEIGHTS_FILES[self.kind]} in files")

    @classmethod
    def zero_shot(cls, *, backbone: str, class_map: dict[str, list[int]], temperature: float = 1.0,
                  top_k: int | None = ZERO_SHOT_TOP_K) -> "ModelCard":
        names = tuple(sorted(class_map))
        return cls(
            kind=KIND_ZERO_SHOT,
            backbone=backbone,
            classes=names + (OTHER,),
            preprocessing=get_spec(backbone).preprocessing,
            imagenet_map={name: sorted(int(i) for i in class_map[name]) for name in names},
            temperature=temperature,
            zero_shot_top_k=top_k,
        )

    @property
    def combined(self) -> bool:
        """A trained card whose classes go beyond its head's (zero-shot classes, "other")."""
        return self.kind != KIND_ZERO_SHOT and bool(self.head_classes)

    @property
    def weights_file(self) -> str | None:
        return WEIGHTS_FILES.get(self.kind)

    def to_dict(self) -> dict:
        data = {
            "kind": self.kind,
            "backbone": self.backbone,
            "classes": list(self.classes),
            "preprocessing": self.preprocessing.to_dict(),
        }
        if self.kind == KIND_ZERO_SHOT:
            # Exactly the keys zero-shot cards always had (their hash names a version), and
            # the temperature and top k once there are.
            data["imagenet_map"] = {k: list(v) for k, v in self.imagenet_map.items()}
            if self.temperature != 1.0:
                data["temperature"] = self.temperature
            if self.zero_shot_top_k is not None:
                data["zero_shot_top_k"] = self.zero_shot_top_k
            return data
        if self.combined:
            data |= {
                "head_classes": list(self.head_classes),
                "served": self.served,
                "imagenet_map": {k: list(v) for k, v in self.imagenet_map.items()},
                "zero_shot_temperature": self.zero_shot_temperature,
                "other_bias": self.other_bias,
                "prior_weight": self.prior_weight,
            }
            if self.zero_shot_top_k is not None:
                data["zero_shot_top_k"] = self.zero_shot_top_k
        return data | {
            "temperature": self.temperature,
            "tta": self.tta,
            "files": dict(self.files),
            "metrics": self.metrics,
            "training": self.training,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "ModelCard":
        return cls(
            kind=data["kind"],
            backbone=data["backbone"],
            classes=tuple(data["classes"]),
            preprocessing=Preprocessing.from_dict(data["preprocessing"]),
            imagenet_map={k: list(v) for k, v in data.get("imagenet_map", {}).items()},
            temperature=float(data.get("temperature", 1.0)),
            head_classes=tuple(data.get("head_classes", ())),
            served=dict(data.get("served", {})),
            zero_shot_temperature=float(data.get("zero_shot_temperature", 1.0)),
            other_bias=float(data.get("other_bias", 0.0)),
            prior_weight=float(data.get("prior_weight", 0.0)),
            zero_shot_top_k=None if data.get("zero_shot_top_k") is None else int(data["zero_shot_top_k"]),
            tta=bool(data.get("tta", False)),
            files=dict(data.get("files", {})),
            metrics=data.get("metrics", {}),
            training=data.get("training", {}),
        )

    @classmethod
    def load(cls, model_dir: str | os.PathLike, *, verify: bool = True) -> "ModelCard":
        """The card in model_dir; with verify, every file it lists must match its checksum."""
        model_dir = Path(model_dir)
        card_path = model_dir / CARD_FILE
        if not card_path.is_file():
            raise ModelDirError(f"{model_dir} is not a model directory: it has no {CARD_FILE}")
        card = cls.from_dict(json.loads(card_path.read_text()))
        if verify:
            card.verify_files(model_dir)
        return card

    def verify_files(self, model_dir: str | os.PathLike) -> None:
        for name, expected in self.files.items():
            path = Path(model_dir) / name
            if not path.is_file():
                raise ModelDirError(f"{model_dir}: {name} is listed in {CARD_FILE} but missing")
            if file_sha256(path) != expected:
                raise ModelDirError(f"{model_dir}: {name} does not match the checksum in {CARD_FILE}")
