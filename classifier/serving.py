"""One Predictor per process, loaded on first use and replaced when the version changes."""

import threading

import torch
from django.conf import settings

from .ml.predict import ModelCard, Predictor
from .models import ModelVersion

_lock = threading.Lock()
_cached: dict[str, object] = {"key": None, "predictor": None}


def get_predictor(version: ModelVersion) -> Predictor:
    with _lock:
        # The card's hash is part of the key: an id alone can be reused (a deleted row, a
        # rolled-back test) and must never serve another card's classes.
        key = (version.id, version.card_sha256)
        if _cached["key"] != key:
            if settings.TORCH_NUM_THREADS:
                torch.set_num_threads(settings.TORCH_NUM_THREADS)
            device = "cuda" if torch.cuda.is_available() else "cpu"
            _cached["predictor"] = Predictor(
                ModelCard.from_dict(version.card), device=device, weights_dir=settings.WEIGHTS_DIR
            )
            _cached["key"] = key
        return _cached["predictor"]
