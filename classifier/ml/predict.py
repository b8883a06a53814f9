"""Predictions from a model card: load once per process, then predict many times.

A model card (cards.py) is the plain-data description of one model version: its backbone, its
classes in order, its preprocessing and its head. The Predictor refuses a card whose preprocessing
is missing, so a version can never be served with a transform it was not made for.

Kinds: "zero_shot" maps the ImageNet head onto the classes and needs no files; "head" is a
linear layer on the backbone's pooled features (head.pt); "finetune" is the whole network
(model.pt). Trained kinds live in a model directory: card.json plus the weights, each
checked against the SHA-256 the card records.

    python -m classifier.ml.predict --model MODEL_DIR PATH_OR_DIR... [--top-k K]
"""

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from .backbones import get_spec, load_backbone
from .batch import predict_files
from .cards import (  # noqa: F401 (re-exported: cards were defined here first)
    CARD_FILE,
    KIND_FINETUNE,
    KIND_HEAD,
    KIND_ZERO_SHOT,
    KINDS,
    WEIGHTS_FILES,
    ModelCard,
    ModelDirError,
    file_sha256,
)
from .combine import CombinedHead, TemperedZeroShot
from .embed import backbone_outputs
from .images import image_files
from .networks import ImageClassifier


@dataclass(frozen=True)
class Scored:
    label: str
    p: float


@dataclass(frozen=True)
class PredictionResult:
    top: list[Scored]
    probabilities: list[float]  # in card.classes order
    embedding: np.ndarray  # float32 pooled backbone features, as the head sees them (flip-averaged with tta)
    duration_ms: float  # this image's share of the batch's model time
    # The image's own pooled features (no mirror), what the Embedding table holds for every
    # version; None where they are unknown (re-scored flip-averaged features).
    plain_embedding: np.ndarray | None = None

    @property
    def label(self) -> str:
        return self.top[0].label

    @property
    def confidence(self) -> float:
        return self.top[0].p


class Predictor:
    """One card's network, ready to predict. Build once per process; it is not cheap.

    Trained kinds need `model_dir`, the folder holding the card's weights (or use from_dir).
    """

    def __init__(self, card: ModelCard, *, device: str = "cpu", weights_dir: str | None = None,
                 model_dir: str | os.PathLike | None = None):
        self.card = card
        self.device = torch.device(device)
        if card.kind != KIND_ZERO_SHOT:
            if model_dir is None:
                raise ModelDirError(f"a {card.kind} card needs model_dir, the folder with its {card.weights_file}")
            card.verify_files(model_dir)
        self.backbone = load_backbone(card.backbone, weights_dir=weights_dir)
        if card.kind == KIND_ZERO_SHOT:
            self.head = TemperedZeroShot(card.classes[:-1], card.imagenet_map, card.temperature,
                                         card.zero_shot_top_k)
        else:
            state = torch.load(Path(model_dir) / card.weights_file, map_location="cpu", weights_only=True)
            spec = get_spec(card.backbone)
            outputs = len(card.head_classes or card.classes)
            if card.kind == KIND_HEAD:
                self.head = nn.Linear(spec.feature_dim, outputs)
                self.head.load_state_dict(state)
            else:
                # Loading into a classifier built around the backbone's trunk replaces the
                # trunk's ImageNet weights with the fine-tuned ones in place.
                network = ImageClassifier(self.backbone.trunk, spec.feature_dim, outputs)
                network.load_state_dict(state)
                self.head = network.head
            if card.combined:
                self.head = CombinedHead(self.head, classes=card.classes, head_classes=card.head_classes,
                                         imagenet_map=card.imagenet_map, temperature=card.temperature,
                                         zero_shot_temperature=card.zero_shot_temperature,
                                         other_bias=card.other_bias, prior_weight=card.prior_weight,
                                         zero_shot_top_k=card.zero_shot_top_k)
        self.backbone = self.backbone.to(self.device).eval()
        if self.device.type == "cuda":
            self.backbone = self.backbone.to(memory_format=torch.channels_last)
        self.head = self.head.to(self.device).eval()
        self.transform = card.preprocessing.transform()

    @classmethod
    def from_dir(cls, model_dir: str | os.PathLike, *, device: str = "cpu",
                 weights_dir: str | None = None) -> "Predictor":
        return cls(ModelCard.load(model_dir, verify=False), device=device, weights_dir=weights_dir,
                   model_dir=model_dir)

    @property
    def backend(self) -> str:
        return f"torch-{self.device.type}"

    @property
    def embeddings_backend(self) -> str:
        """What runs predict_embeddings."""
        return self.backend

    def _probabilities(self, features: torch.Tensor, imagenet_logits: torch.Tensor | None) -> torch.Tensor:
        if self.card.kind == KIND_ZERO_SHOT or self.card.combined:
            if imagenet_logits is None:  # stored features: the ImageNet head is all the zero-shot part needs
                imagenet_logits = self.backbone.imagenet_head(features)
            if self.card.kind == KIND_ZERO_SHOT:
                return self.head(imagenet_logits)
            return self.head(features, imagenet_logits)
        return torch.softmax(self.head(features.float()) / self.card.temperature, dim=1)

    def predict(self, images: Sequence[Image.Image], *, top_k: int = 5) -> list[PredictionResult]:
        if not images:
            return []
        return self.predict_tensor(torch.stack([self.transform(im) for im in images]), top_k=top_k)

    def predict_prepared(self, items: Sequence[torch.Tensor], *, top_k: int = 5) -> list[PredictionResult]:
        """Images each already through self.transform (the batch pipeline's interface)."""
        return self.predict_tensor(torch.stack(list(items)), top_k=top_k) if items else []

    @torch.inference_mode()
    def predict_tensor(self, batch: torch.Tensor, *, top_k: int = 5) -> list[PredictionResult]:
        """Images already through self.transform, stacked (n, 3, h, w): what a pipeline that
        decodes in other threads hands over."""
        started = time.perf_counter()
        batch = batch.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            # Mixed precision and channels_last: the fast path of convolutions on tensor cores.
            batch = batch.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.float16):
                features, logits, plain = backbone_outputs(self.backbone, batch, tta=self.card.tta)
            features = features.float()
            logits = logits.float() if logits is not None else None
        else:
            features, logits, plain = backbone_outputs(self.backbone, batch, tta=self.card.tta)
        probs = self._probabilities(features, logits)
        features = features.float().cpu().numpy()
        plain = plain.float().cpu().numpy() if self.card.tta else features
        return self._results(probs, features, started, top_k, plain=plain)

    @torch.inference_mode()
    def predict_embeddings(self, embeddings: np.ndarray, *, top_k: int = 5) -> list[PredictionResult]:
        """Re-score pooled features (as PredictionResult.embedding or the embedding cache
        gives them) without running the backbone: seconds for a whole collection."""
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[1] != get_spec(self.card.backbone).feature_dim:
            raise ValueError(
                f"embeddings must be (n, {get_spec(self.card.backbone).feature_dim}) for {self.card.backbone}, "
                f"got {embeddings.shape}"
            )
        if len(embeddings) == 0:
            return []
        started = time.perf_counter()
        probs = self._probabilities(torch.from_numpy(embeddings).to(self.device), None)
        return self._results(probs, embeddings, started, top_k, plain=None if self.card.tta else embeddings)

    def _results(self, probs: torch.Tensor, features: np.ndarray, started: float, top_k: int, *,
                 plain: np.ndarray | None) -> list[PredictionResult]:
        probs = probs.cpu().numpy().astype(np.float64)
        per_image_ms = (time.perf_counter() - started) * 1000.0 / len(probs)
        k = min(top_k, len(self.card.classes))
        results = []
        for i, (row, feature) in enumerate(zip(probs, features)):
            order = np.argsort(-row, kind="stable")[:k]
            results.append(
                PredictionResult(
                    top=[Scored(self.card.classes[j], float(row[j])) for j in order],
                    probabilities=[float(p) for p in row],
                    embedding=feature.astype(np.float32),
                    duration_ms=per_image_ms,
                    plain_embedding=None if plain is None else plain[i].astype(np.float32),
                )
            )
        return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m classifier.ml.predict",
                                     description="Print a trained model's top-k classes, one JSON line per image.")
    parser.add_argument("--model", required=True, type=Path, help="model directory (card.json + weights)")
    parser.add_argument("paths", nargs="+", metavar="PATH_OR_DIR", help="image files, or folders to search")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--weights-dir", default=None, help="where the backbone's ImageNet weights are")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error("--top-k must be at least 1")
    try:
        files = image_files(args.paths)
        predictor = Predictor.from_dir(args.model, device=args.device, weights_dir=args.weights_dir)
    except (FileNotFoundError, ModelDirError) as e:
        parser.error(str(e))
    failed = 0
    for line in predict_files(predictor, files, top_k=args.top_k, batch_size=args.batch_size):
        failed += "error" in line
        print(json.dumps(line), flush=True)
    if failed:
        print(f"{failed} of {len(files)} files could not be classified", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
