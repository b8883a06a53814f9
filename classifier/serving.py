"""One Predictor per process, loaded on first use and replaced when the version changes."""

import threading

import torch
from django.conf import settings

from .ml.predict import ModelCard, Predictor
from .models import ModelVersion

_lock = threading.Lock()
_cached: dict[str, object] = {"version_id": None, "predictor": None}


def get_predictor(version: ModelVersion) -> Predictor:
    with _lock:
        if _cached["version_id"] != version.id:
            if settings.TORCH_NUM_THREADS:
                torch.set_num_threads(settings.TORCH_NUM_THREADS)
            device = "cuda" if torch.cuda.is_available() else "cpu"
            _cached["predictor"] = Predictor(
                ModelCard.from_dict(version.card), device=device, weights_dir=settings.WEIGHTS_DIR
            )
            _cached["version_id"] = version.id
        return _cached["predictor"]
