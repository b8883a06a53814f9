"""Exporting a model version to ONNX, checked against PyTorch before anything is kept.

The graph is the whole network the Predictor runs, for any card kind: backbone, flip
averaging where the card uses it, and the head (the zero-shot head included), with a dynamic
batch axis. Outputs: probabilities in card.classes order and the pooled embedding, the same
vector as PredictionResult.embedding. The card's JSON goes into the graph's metadata, so
OrtPredictor can refuse a graph served with another version's card.

The graph is written to a temporary file beside the destination, run with ONNX Runtime and
with PyTorch on the same preprocessed images, and renamed into place only when the
probabilities agree within the tolerance: a failed check leaves nothing behind.

Uses the TorchScript-based exporter (dynamo=False): on these networks it is the one known to
give a graph that ONNX Runtime runs with the same results (max abs logit difference ~4e-5).
"""

import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from .embed import backbone_outputs
from .ort import CARD_METADATA_KEY, INPUT_NAME, OUTPUT_NAMES, card_json, create_session
from .predict import Predictor, file_sha256

ONNX_FILE = "model.onnx"  # suggested name beside a version's weights
DEFAULT_OPSET = 17
TOLERANCE = 1e-4  # max abs difference of probabilities, ONNX Runtime against PyTorch


class ExportCheckFailed(RuntimeError):
    """The exported graph does not give PyTorch's results; nothing was written."""


@dataclass(frozen=True)
class ExportReport:
    path: str
    sha256: str
    n_images: int
    max_abs_diff_probabilities: float
    max_abs_diff_embedding: float
    tolerance: float
    opset: int
    onnxruntime_version: str
    torch_version: str
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


class ServingNetwork(nn.Module):
    """A preprocessed batch -> (probabilities, embedding, plain embedding), exactly as
    Predictor.predict computes them."""

    def __init__(self, predictor: Predictor):
        super().__init__()
        self.predictor = predictor
        # Registered here too, so the exporter sees their weights as the module's parameters.
        self.backbone = predictor.backbone
        self.head = predictor.head

    def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features, logits, plain = backbone_outputs(self.backbone, batch, tta=self.predictor.card.tta)
        # The Predictor's own scoring, not a copy of it: the graph cannot drift from it.
        return self.predictor._probabilities(features, logits), features.float(), plain.float()


def export_onnx(predictor: Predictor, path: str | os.PathLike, *, check_images: Sequence[Image.Image],
                opset: int = DEFAULT_OPSET, tolerance: float = TOLERANCE, overwrite: bool = False) -> ExportReport:
    """Writes predictor's network to path as ONNX, once it matches PyTorch on check_images.

    check_images should be real photos (a few are enough; each is checked in one batch and
    alone, which also proves the batch axis is dynamic). Raises ExportCheckFailed, writing
    nothing, when any probability differs by tolerance or more.
    """
    import onnxruntime

    started = time.perf_counter()
    path = Path(path)
    if predictor.device.type != "cpu":
        raise ValueError(f"export from a CPU Predictor (this one is on {predictor.device}): "
                         "the check compares against ONNX Runtime on the CPU")
    if not check_images:
        raise ValueError("check_images is empty: the export is only kept once it matches PyTorch on real images")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite to replace it")

    batch = predictor.card.preprocessing.batch(check_images)
    network = ServingNetwork(predictor).eval()
    with torch.inference_mode():
        expected_probabilities, *expected_embeddings = (t.numpy() for t in network(batch))

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _export(network, batch, tmp, opset)
        _add_metadata(tmp, {CARD_METADATA_KEY: card_json(predictor.card), "animalsite.torch": torch.__version__})
        diff_p, diff_e = _compare(tmp, batch.numpy(), expected_probabilities, expected_embeddings)
        if not diff_p < tolerance:  # also catches NaN
            raise ExportCheckFailed(
                f"ONNX export of the {predictor.card.kind} {predictor.card.backbone} model does not match PyTorch: "
                f"max abs difference of probabilities {diff_p:.3g} over {len(check_images)} images "
                f"(must be below {tolerance:g}); nothing was written to {path}"
            )
        os.chmod(tmp, 0o644)  # mkstemp makes it private; web and worker processes read it
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # on disk before the rename, so a crash cannot leave an empty file
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ExportReport(
        path=str(path),
        sha256=file_sha256(path),
        n_images=len(check_images),
        max_abs_diff_probabilities=diff_p,
        max_abs_diff_embedding=diff_e,
        tolerance=tolerance,
        opset=opset,
        onnxruntime_version=onnxruntime.__version__,
        torch_version=torch.__version__,
        seconds=round(time.perf_counter() - started, 3),
    )


def _export(network: nn.Module, batch: torch.Tensor, out: Path, opset: int) -> None:
    # Traced with two images at least, so no shape gets fixed to a batch of one.
    example = batch[:2] if len(batch) >= 2 else torch.cat([batch, batch])
    batch_axis = {0: "batch"}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        # The legacy exporter warns that it is legacy, and that it cannot constant-fold the
        # negative-step Slice of the mirror; both are expected here.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(
            network, (example,), str(out), dynamo=False, opset_version=opset, do_constant_folding=True,
            input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
            dynamic_axes={name: batch_axis for name in (INPUT_NAME, *OUTPUT_NAMES)},
        )


def _add_metadata(onnx_path: Path, entries: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(onnx_path))
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    onnx.save(model, str(onnx_path))


def _compare(onnx_path: Path, batch: np.ndarray, probabilities: np.ndarray,
             embeddings: list[np.ndarray]) -> tuple[float, float]:
    """Max abs differences (probabilities, both embeddings): the whole batch at once, then each image alone."""
    session = create_session(onnx_path)
    runs = [slice(None)]
    if len(batch) > 1:
        runs += [slice(i, i + 1) for i in range(len(batch))]
    diff_p = diff_e = 0.0
    for rows in runs:
        got_p, *got_e = _onnx_outputs(session, batch[rows])
        diff_p = max(diff_p, _max_abs_diff(got_p, probabilities[rows]))
        for got, expected in zip(got_e, embeddings, strict=True):
            diff_e = max(diff_e, _max_abs_diff(got, expected[rows]))
    return diff_p, diff_e


def _max_abs_diff(got: np.ndarray, expected: np.ndarray) -> float:
    if got.shape != expected.shape:
        raise ExportCheckFailed(f"the ONNX graph gave shape {got.shape} where PyTorch gives {expected.shape}")
    diff = float(np.abs(got - expected).max())
    return diff if np.isfinite(diff) else float("inf")  # NaN would compare as "not larger" in max()


def _onnx_outputs(session, batch: np.ndarray) -> list[np.ndarray]:
    return session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch})
