"""Serving a model version on the CPU through ONNX Runtime.

The graph is the one export.py writes and checks against PyTorch: image batch in,
probabilities (in card.classes order) and the pooled embedding out, flip averaging inside
where the card uses it. OrtPredictor has the Predictor's public interface (card, backend,
transform, predict, predict_prepared, predict_embeddings), so callers do not care which one
they hold.

Session settings, and why (measured on the 2-core machine, EfficientNet-Lite0, batch 1):
- graph optimisation ORT_ENABLE_ALL: fusions and the NCHWc layout for the convolutions.
- intra-op threads from the caller (default: the CPUs this process may use).
- no spin-waiting: ORT's default keeps idle pool threads spinning for work, which is a
  small win on an idle machine, but when anything else runs (the web process, another
  worker, a test run) the spinning threads fight it for the two cores: 20-45 images/s
  against 40-80 without spinning, with one other busy process on the machine.
- int8 quantisation was measured and not adopted: static QDQ on every convolution was
  ~1.3x faster but lost 2.2 points of probe accuracy on the Caltech test split; without the
  depthwise convolutions it lost 0.3 point for ~1.2x, and its embeddings were 12% away
  from the fp32 ones that the embedding cache and head-only re-scoring rely on.
"""

import json
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from .predict import ModelCard, PredictionResult, Predictor, Scored
from .preprocessing import Preprocessing

BACKEND = "onnxruntime-cpu"
INPUT_NAME = "images"
OUTPUT_NAMES = ("probabilities", "embedding", "plain_embedding")
CARD_METADATA_KEY = "animalsite.card"  # the card's JSON, written into the graph by export.py


class OnnxModelError(ValueError):
    """An ONNX file that does not belong to the card it is served with."""


def ort_available() -> bool:
    """True where onnxruntime is installed and can run on the CPU."""
    try:
        import onnxruntime
    except ImportError:
        return False
    return "CPUExecutionProvider" in onnxruntime.get_available_providers()


def default_threads() -> int:
    """The CPUs this process may run on (a container's or taskset's limit, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def card_json(card: ModelCard) -> str:
    """The canonical text of a card, as stored in the graph and compared when serving."""
    return json.dumps(card.to_dict(), sort_keys=True)


def create_session(onnx_path: str | os.PathLike, *, threads: int | None = None, spin: bool = False):
    """An InferenceSession with the serving settings (see the module docstring)."""
    import onnxruntime as ort

    threads = default_threads() if threads is None else threads
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # sequential execution: no inter-op pool to keep busy
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


class FastPreprocess:
    """card.preprocessing.transform(), bit for bit, into numpy without torch's per-image cost.

    Resize and centre crop are torchvision's own functions on the PIL image (so sizes and
    rounding are theirs); scaling and normalising go through a per-channel lookup table of
    the 256 byte values, computed with the same float32 operations torchvision applies
    ((v * (1/255) - mean) / std), so every value is identical. Picklable, for DataLoader workers.
    """

    def __init__(self, preprocessing: Preprocessing):
        self.preprocessing = preprocessing
        values = np.arange(256, dtype=np.float32)[None, :]
        mean = np.asarray(preprocessing.mean, dtype=np.float32)[:, None]
        std = np.asarray(preprocessing.std, dtype=np.float32)[:, None]
        self.table = ((values * np.float32(1.0 / 255)) - mean) / std  # (3, 256) float32

    def crop(self, image: Image.Image) -> np.ndarray:
        """The resized, centre-cropped picture as (H, W, 3) bytes."""
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms.v2 import functional as F

        p = self.preprocessing
        if image.mode != "RGB":
            image = image.convert("RGB")
        image = F.resize(image, [p.resize_size], interpolation=InterpolationMode(p.interpolation), antialias=True)
        return np.asarray(F.center_crop(image, [p.crop_size]))

    def __call__(self, image: Image.Image, out: np.ndarray | None = None) -> np.ndarray:
        """One image as a (3, crop, crop) float32 array (written into out when given)."""
        pixels = self.crop(image)
        if out is None:
            out = np.empty((3, *pixels.shape[:2]), dtype=np.float32)
        for channel in range(3):
            np.take(self.table[channel], pixels[:, :, channel], out=out[channel])
        return out

    def batch(self, images: Sequence[Image.Image]) -> np.ndarray:
        size = self.preprocessing.crop_size
        out = np.empty((len(images), 3, size, size), dtype=np.float32)
        for i, image in enumerate(images):
            self(image, out=out[i])
        return out


class OrtPredictor:
    """One exported model version served by ONNX Runtime. Build once per process.

    The graph must have been exported for this very card (export.py stores the card in the
    graph's metadata): a graph of another version, with other classes or preprocessing, is
    refused. predict_embeddings runs only the head, through the PyTorch Predictor built on
    first use (a trained card needs model_dir for that), so it scores exactly as Predictor does.
    """

    def __init__(self, card: ModelCard, onnx_path: str | os.PathLike, *, threads: int | None = None,
                 spin: bool = False, model_dir: str | os.PathLike | None = None,
                 weights_dir: str | os.PathLike | None = None):
        self.card = card
        self.onnx_path = Path(onnx_path)
        if not self.onnx_path.is_file():
            raise FileNotFoundError(f"{self.onnx_path}: no such ONNX file; export the version first (export_onnx)")
        self.session = create_session(self.onnx_path, threads=threads, spin=spin)
        self.threads = threads or default_threads()
        self._check_graph()
        self.preprocess = FastPreprocess(card.preprocessing)
        self.model_dir = model_dir
        self.weights_dir = weights_dir
        self._head_predictor: Predictor | None = None

    @property
    def backend(self) -> str:
        return BACKEND

    @property
    def embeddings_backend(self) -> str:
        """What runs predict_embeddings: the head alone, in PyTorch on the CPU."""
        return "torch-cpu"

    @property
    def transform(self) -> FastPreprocess:
        """PIL image -> (3, H, W) float32 array, as the batch pipeline's decoding threads call it."""
        return self.preprocess

    def predict_prepared(self, items: Sequence[np.ndarray], *, top_k: int = 5) -> list[PredictionResult]:
        """Images each already through self.transform (the batch pipeline's interface)."""
        return self.predict_preprocessed(np.stack(items), top_k=top_k) if len(items) else []

    def _check_graph(self) -> None:
        stored = self.session.get_modelmeta().custom_metadata_map.get(CARD_METADATA_KEY)
        if stored is None:
            raise OnnxModelError(f"{self.onnx_path} has no {CARD_METADATA_KEY} metadata; export it with export_onnx")
        if stored != card_json(self.card):
            other = json.loads(stored)
            raise OnnxModelError(
                f"{self.onnx_path} was exported for another card ({other.get('kind')}, {other.get('backbone')}, "
                f"classes {other.get('classes')}), not this {self.card.kind} card with classes "
                f"{list(self.card.classes)}"
            )
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != [INPUT_NAME] or tuple(outputs) != OUTPUT_NAMES:
            raise OnnxModelError(f"{self.onnx_path}: expected input {INPUT_NAME} and outputs {OUTPUT_NAMES}, "
                                 f"got {inputs} and {outputs}")

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(probabilities, embeddings, plain embeddings) for an already preprocessed (n, 3, H, W)
        float32 batch."""
        probabilities, embeddings, plain = self.session.run(OUTPUT_NAMES, {INPUT_NAME: batch})
        return probabilities, embeddings, plain

    def predict(self, images: Sequence[Image.Image], *, top_k: int = 5) -> list[PredictionResult]:
        if not images:
            return []
        return self.predict_preprocessed(self.preprocess.batch(images), top_k=top_k)

    def predict_preprocessed(self, batch: np.ndarray, *, top_k: int = 5) -> list[PredictionResult]:
        """As predict, for a batch preprocessed elsewhere (FastPreprocess in DataLoader workers)."""
        size = self.card.preprocessing.crop_size
        if batch.ndim != 4 or batch.shape[1:] != (3, size, size) or batch.dtype != np.float32:
            raise ValueError(f"expected a float32 (n, 3, {size}, {size}) batch, got {batch.dtype} {batch.shape}")
        if len(batch) == 0:
            return []
        started = time.perf_counter()
        probabilities, embeddings, plain = self.run(np.ascontiguousarray(batch))
        ms = (time.perf_counter() - started) * 1000.0 / len(batch)
        return results(self.card.classes, probabilities, embeddings, ms, top_k, plain=plain)

    def predict_embeddings(self, embeddings: np.ndarray, *, top_k: int = 5) -> list[PredictionResult]:
        """Re-score pooled features without the backbone (see Predictor.predict_embeddings)."""
        if self._head_predictor is None:
            # Loads the backbone's weights once (its ImageNet head scores zero-shot cards), but
            # never runs it: only the head touches the embeddings.
            self._head_predictor = Predictor(self.card, model_dir=self.model_dir, weights_dir=self.weights_dir)
        return self._head_predictor.predict_embeddings(embeddings, top_k=top_k)


def results(classes: Sequence[str], probabilities: np.ndarray, embeddings: np.ndarray, per_image_ms: float,
            top_k: int, *, plain: np.ndarray) -> list[PredictionResult]:
    """PredictionResults as Predictor makes them: top-k by probability, ties in class order."""
    probabilities = probabilities.astype(np.float64)
    k = min(top_k, len(classes))
    out = []
    for row, embedding, plain_embedding in zip(probabilities, embeddings, plain, strict=True):
        order = np.argsort(-row, kind="stable")[:k]
        out.append(PredictionResult(
            top=[Scored(classes[i], float(row[i])) for i in order],
            probabilities=[float(p) for p in row],
            embedding=embedding.astype(np.float32),
            duration_ms=per_image_ms,
            plain_embedding=plain_embedding.astype(np.float32),
        ))
    return out
