"""One Predictor per process, loaded on first use and replaced when the version changes."""

import threading
from pathlib import Path

import torch
from django.conf import settings

from .ml.predict import ModelCard, Predictor
from .models import ModelVersion

_lock = threading.Lock()
_cached: dict[str, object] = {"key": None, "predictor": None}


def rescores_embeddings(card) -> bool:
    """Whether stored (plain) features are all this card's network needs: its backbone is the
    ImageNet one and only the head differs, so re-predicting skips the backbone."""
    return card.kind in ("zero_shot", "head") and not card.tta


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def model_dir_of(version: ModelVersion) -> Path | None:
    return Path(settings.MODELS_ROOT) / version.model_dir if version.model_dir else None


def build_predictor(version: ModelVersion, *, device: str | None = None) -> Predictor:
    """A fresh Predictor for any version (trained ones load and verify their model folder)."""
    if settings.TORCH_NUM_THREADS:
        torch.set_num_threads(settings.TORCH_NUM_THREADS)
    return Predictor(ModelCard.from_dict(version.card), device=device or default_device(),
                     weights_dir=settings.WEIGHTS_DIR, model_dir=model_dir_of(version))


def get_predictor(version: ModelVersion) -> Predictor:
    with _lock:
        # The card's hash is part of the key: an id alone can be reused (a deleted row, a
        # rolled-back test) and must never serve another card's classes.
        key = (version.id, version.card_sha256)
        if _cached["key"] != key:
            _cached["predictor"] = build_predictor(version)
            _cached["key"] = key
        return _cached["predictor"]
