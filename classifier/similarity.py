"""More like this: nearest neighbours by cosine over the stored pooled embeddings of the
production version's backbone and preprocessing (ModelVersion.embedding_key).

Each process holds one index per backbone (classifier.ml.vector_index: exact numpy search below
SIMILARITY_INDEX_MIN_ROWS rows, an inverted-file index above, the float32 unit rows stored once:
512 MB for 100,000 x 1280). Before each query it reads the Embedding rows above the highest id it
has read (one indexed query, usually empty), so a new row is found at once. Two kinds of change
an id watermark cannot see are caught at most SIMILARITY_RESYNC_SECONDS late: a row whose
transaction committed after a later id had been read, and rows that are gone (a deleted image).
Every that many seconds one aggregate (count and sum of the ids) is compared with the index's; on a
difference the ids are read and only the missing rows fetched. A count per query was not kept: it
scans the table (SQLite stores the vectors inline: half a gigabyte at 100k).
"""

import threading
import time

import numpy as np
from django.conf import settings
from django.db.models import Count, Sum

from .errors import Rejected
from .ml.vector_index import VectorIndex, unit
from .models import Embedding
from .selectors import production_model

__all__ = ["EmbeddingMatrix", "backbone", "forget", "image_embedding", "matrix", "nearest", "unit"]


class EmbeddingMatrix:
    def __init__(self, backbone: str):
        self.backbone = backbone
        self.index: VectorIndex | None = None  # made when the first row's width is known
        self.last_row = 0  # the highest Embedding id read
        self.synced_at = 0.0  # time.monotonic() of the last aggregate check
        self.lock = threading.Lock()

    def catch_up(self) -> None:
        self._read(Embedding.objects.filter(backbone=self.backbone, id__gt=self.last_row))
        if time.monotonic() - self.synced_at >= settings.SIMILARITY_RESYNC_SECONDS:
            self._resync()

    def _rows(self):
        return Embedding.objects.filter(backbone=self.backbone)

    def _read(self, rows) -> None:
        keys, ids, blocks, block = [], [], [], []
        for row_id, image_id, vector in rows.order_by("id").values_list("id", "image_id", "vector").iterator(
                chunk_size=2000):
            ids.append(row_id)
            keys.append(image_id)
            block.append(np.frombuffer(bytes(vector), dtype="<f4"))
            if len(block) == 2000:  # a float32 block, so the raw bytes are freed as it goes
                blocks.append(np.stack(block))
                block = []
        if block:
            blocks.append(np.stack(block))
        if not ids:
            return
        if self.index is None:
            self.index = VectorIndex(blocks[0].shape[1], min_rows=settings.SIMILARITY_INDEX_MIN_ROWS)
        self.index.add(keys, ids, blocks)
        self.last_row = max(self.last_row, ids[-1])

    def _resync(self) -> None:
        seen = self.index.rows() if self.index is not None else np.zeros(0, dtype=np.int64)
        stored = self._rows().aggregate(n=Count("id"), total=Sum("id"))
        self.synced_at = time.monotonic()
        if stored["n"] == len(seen) and (stored["total"] or 0) == int(seen.sum()):
            return
        ids = np.fromiter(self._rows().values_list("id", flat=True).iterator(chunk_size=10000), dtype=np.int64)
        gone = np.setdiff1d(seen, ids)
        if len(gone) and self.index is not None:
            self.index.remove(gone)
        missing = np.setdiff1d(ids, seen).tolist()
        for start in range(0, len(missing), 500):
            self._read(self._rows().filter(id__in=missing[start:start + 500]))


_matrices: dict[str, EmbeddingMatrix] = {}
_matrices_lock = threading.Lock()


def backbone() -> str:
    version = production_model()
    return version.embedding_key if version is not None else settings.DEFAULT_BACKBONE


def matrix(name: str | None = None) -> EmbeddingMatrix:
    """The process's cached index for the backbone, caught up with the Embedding table."""
    name = name or backbone()
    with _matrices_lock:
        m = _matrices.get(name)
        if m is None:
            m = _matrices[name] = EmbeddingMatrix(name)
    with m.lock:
        m.catch_up()
    return m


def forget() -> None:
    """Drop the cached indexes (tests that reuse ids after a rollback)."""
    with _matrices_lock:
        _matrices.clear()


def nearest(query: np.ndarray, *, k: int, exclude: int | None = None, among=None,
            name: str | None = None) -> list[tuple[int, float]]:
    """(image id, cosine similarity) of the k stored embeddings closest to `query`, best first
    (ties by id); `exclude`: an image id left out (the query image itself); `among`: only these
    image ids (searched exactly)."""
    m = matrix(name)
    if m.index is None or k < 1:
        return []
    with m.lock:  # a concurrent catch-up may rebuild the index's arrays
        return m.index.search(np.asarray(query, dtype=np.float32), k, exclude=exclude, among=among)


def image_embedding(image_id: int, name: str | None = None) -> np.ndarray:
    vector = (Embedding.objects.filter(image_id=image_id, backbone=name or backbone())
              .values_list("vector", flat=True).first())
    if vector is None:
        raise Rejected(f"Image {image_id} has no stored embedding of the production backbone yet (it is "
                       "computed when the image is predicted).")
    return np.frombuffer(bytes(vector), dtype="<f4")
