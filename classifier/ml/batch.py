"""Batch prediction with decoding overlapped: threads decode and preprocess the next batch while
the network runs on this one, so the model does not wait on JPEG decoding.

Threads rather than DataLoader worker processes: Celery's prefork children are daemonic and may
not start processes of their own, and Pillow's decode and resize release the GIL.
"""

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Hashable, Iterator, Sequence

from .images import DEFAULT_MAX_PIXELS, InvalidImage, decode_image

Load = Callable[[], bytes]  # returns one image's bytes (a file, a storage object, a zip member)


@dataclass
class BatchStats:
    images: int = 0
    failed: int = 0
    batches: int = 0
    decode_seconds: float = 0.0  # summed over the decoding threads
    model_seconds: float = 0.0
    wait_seconds: float = 0.0  # the model waiting for decoded images: ideally ~0
    seconds: float = 0.0
    errors: dict = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


def _prepare(load: Load, transform: Callable, max_pixels: int | None):
    started = time.perf_counter()
    try:
        image = decode_image(load(), max_pixels=max_pixels or DEFAULT_MAX_PIXELS).image
        return transform(image), None, time.perf_counter() - started
    except (InvalidImage, OSError, ValueError) as e:
        error = str(e) if isinstance(e, InvalidImage) else f"{type(e).__name__}: {e}"
        return None, error, time.perf_counter() - started


def predict_stream(predictor, items: Sequence[tuple[Hashable, Load]], *, batch_size: int = 32, threads: int = 2,
                   top_k: int = 5, max_pixels: int | None = None,
                   stats: BatchStats | None = None) -> Iterator[tuple[Hashable, object, str | None]]:
    """Yields (key, PredictionResult or None, error or None) for each item, in order.

    `predictor` is anything with `transform` (PIL image -> array or tensor) and
    `predict_prepared` (a list of those -> results): Predictor and OrtPredictor both are.
    A file that cannot be decoded gives its error and does not stop the batch.
    """
    stats = stats if stats is not None else BatchStats()
    started = time.perf_counter()
    batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="decode") as pool:
        def submit(batch) -> list[Future]:
            return [pool.submit(_prepare, load, predictor.transform, max_pixels) for _, load in batch]

        pending = submit(batches[0]) if batches else []
        for index, batch in enumerate(batches):
            waited = time.perf_counter()
            prepared = [f.result() for f in pending]
            stats.wait_seconds += time.perf_counter() - waited
            pending = submit(batches[index + 1]) if index + 1 < len(batches) else []
            tensors = [tensor for tensor, _, _ in prepared if tensor is not None]
            stats.decode_seconds += sum(seconds for _, _, seconds in prepared)
            model_started = time.perf_counter()
            results = iter(predictor.predict_prepared(tensors, top_k=top_k))
            stats.model_seconds += time.perf_counter() - model_started
            stats.batches += 1
            for (key, _), (tensor, error, _) in zip(batch, prepared):
                if tensor is None:
                    stats.failed += 1
                    stats.errors[key] = error
                    yield key, None, error
                else:
                    stats.images += 1
                    yield key, next(results), None
    stats.seconds += time.perf_counter() - started


def predict_files(predictor, files: Sequence[Path], *, top_k: int = 5, batch_size: int = 16,
                  max_pixels: int | None = None) -> Iterator[dict]:
    """One JSON-able line per file, in order: {"path", "top": [{"label", "p"}, ...]}, or
    {"path", "error"} for a file that is not a usable image (the command lines print these)."""
    items = [(i, path.read_bytes) for i, path in enumerate(files)]
    for i, result, error in predict_stream(predictor, items, batch_size=batch_size, threads=1, top_k=top_k,
                                           max_pixels=max_pixels):
        if result is None:
            yield {"path": str(files[i]), "error": error}
        else:
            yield {"path": str(files[i]), "top": [{"label": s.label, "p": round(s.p, 6)} for s in result.top]}
