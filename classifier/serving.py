"""One predictor per process, loaded on first use and replaced when the version changes.

CPU processes serve through ONNX Runtime: each version's network is exported once (per card,
named by the card's hash), checked against PyTorch on real photos, and shared by every process
through ONNX_DIR. CUDA processes serve through PyTorch with mixed precision and channels_last.
The backend a prediction came from is stored on it.
"""

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings

from .ml.cards import ModelCard
from .ml.images import decode_image
from .model_store import ModelStoreError, local_model_dir
from .models import ModelVersion

if TYPE_CHECKING:
    from .ml.predict import Predictor

# torch and the predictors are imported where a predictor is built: the web never runs a model.

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_cached: dict[str, object] = {"key": None, "predictor": None, "version": None}
# A version that does not serve but predicts in bulk (an "embed" job, jobs.job_embed) has a slot
# of its own, so its chunks never evict the production predictor single uploads need.
_side: dict[str, object] = {"key": None, "predictor": None, "version": None}
CHECK_PHOTO_COUNT = 4
ONNX_GRAPH_VERSION = 2  # bump when classifier.ml.ort.OUTPUT_NAMES changes


class ServingError(RuntimeError):
    """The configured backend cannot serve this version."""


def rescores_embeddings(card) -> bool:
    """Whether stored (plain) features are all this card's network needs: its backbone is the
    ImageNet one and only the head differs, so re-predicting skips the backbone."""
    return card.kind in ("zero_shot", "head") and not card.tta


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def model_dir_of(version: ModelVersion) -> Path | None:
    """The version's checked local folder (downloaded from the model store if this node lacks it)."""
    return local_model_dir(version)


def onnx_path_of(version: ModelVersion) -> Path:
    # The graph's layout is part of the name: a file exported by an older release (v1: no
    # plain embedding output) is never picked up for this card.
    return Path(settings.ONNX_DIR) / f"{version.card_sha256}.v{ONNX_GRAPH_VERSION}.onnx"


def torch_predictor(version: ModelVersion, *, device: str | None = None) -> "Predictor":
    import torch

    from .ml.predict import Predictor

    if settings.TORCH_NUM_THREADS:
        torch.set_num_threads(settings.TORCH_NUM_THREADS)
    return Predictor(ModelCard.from_dict(version.card), device=device or default_device(),
                     weights_dir=settings.WEIGHTS_DIR, model_dir=model_dir_of(version))


def check_photos() -> list:
    folder = Path(settings.ONNX_CHECK_PHOTOS)
    paths = sorted(folder.rglob("*.jpg"))
    paths = paths[::max(1, len(paths) // CHECK_PHOTO_COUNT)]  # spread over the classes
    if not paths:
        raise ServingError(f"no photos to check an ONNX export against under {folder} (ONNX_CHECK_PHOTOS)")
    return [decode_image(p.read_bytes()).image for p in paths[:CHECK_PHOTO_COUNT]]


def onnx_export(version: ModelVersion, *, predictor: "Predictor | None" = None) -> Path:
    """The version's ONNX file, exported and checked first if no process has done it yet.

    Processes racing on the same card each write a temporary file and rename it into place:
    the last rename wins and every one of them is a checked export.
    """
    from .ml.export import export_onnx

    path = onnx_path_of(version)
    if not path.is_file():
        if predictor is None or predictor.device.type != "cpu":
            predictor = torch_predictor(version, device="cpu")
        report = export_onnx(predictor, path, check_images=check_photos(), overwrite=True)
        logger.info("exported %s to ONNX in %.1f s (max abs probability difference %.2g on %d photos)",
                    version, report.seconds, report.max_abs_diff_probabilities, report.n_images)
    return path


def exports_onnx() -> bool:
    """Whether CPU processes serve through ONNX Runtime here."""
    from .ml.ort import ort_available

    if settings.SERVING_BACKEND == "torch":
        return False
    if not ort_available():
        if settings.SERVING_BACKEND == "onnxruntime":
            raise ServingError("SERVING_BACKEND=onnxruntime but onnxruntime is not installed")
        return False
    return True


def build_predictor(version: ModelVersion, *, device: str | None = None):
    """A fresh predictor for any version: an OrtPredictor on the CPU, else a torch Predictor.

    With SERVING_BACKEND=auto, a version whose export fails its check is served by PyTorch
    (with a warning) rather than not at all.
    """
    device = device or default_device()
    model_dir_of(version)  # the files first: one clear ModelStoreError, never a fallback over them
    if device == "cpu" and exports_onnx():
        from .ml.ort import OrtPredictor

        try:
            path = onnx_export(version)
            return OrtPredictor(ModelCard.from_dict(version.card), path, threads=settings.ONNX_THREADS or None,
                                model_dir=model_dir_of(version), weights_dir=settings.WEIGHTS_DIR)
        except Exception as e:
            if settings.SERVING_BACKEND == "onnxruntime":
                raise
            logger.warning("serving %s with PyTorch: its ONNX export is unusable: %s", version, e)
    return torch_predictor(version, device=device)


def get_predictor(version: ModelVersion, *, side: bool = False):
    """The process's predictor for the version, built once; side: the slot for a version that
    does not serve (see _side), which leaves the production predictor in place."""
    slot = _side if side else _cached
    with _lock:
        # The card's hash is part of the key: an id alone can be reused (a deleted row, a
        # rolled-back test) and must never serve another card's classes.
        key = (version.id, version.card_sha256)
        if slot["key"] != key:
            slot["predictor"] = build_predictor(version)
            slot["key"], slot["version"] = key, version
        return slot["predictor"]


def production_predictor(version: ModelVersion) -> tuple[ModelVersion, "Predictor"]:
    """(version, its predictor); when the version's files cannot be had from the model store, the
    last version this process served keeps serving (the error is logged, naming file and version),
    and it is that version the caller must record."""
    try:
        return version, get_predictor(version)
    except ModelStoreError as e:
        with _lock:
            last, predictor = _cached["version"], _cached["predictor"]
        if predictor is None:
            raise
        logger.error("%s; still serving %s", e, last.name)
        return last, predictor
