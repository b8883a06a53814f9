"""Pooled backbone embeddings for many images, cached on disk so each is computed once.

The cache key is (content sha256, backbone, preprocessing, flip-averaging); an entry is one small .npy
file, written atomically, so several processes can share a cache folder and a killed run
leaves nothing half-written. A second run over the same images does no network work at all.
"""

import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .backbones import Backbone, get_spec, load_backbone
from .cards import file_sha256
from .datasets import Item
from .images import decode_image
from .preprocessing import Preprocessing

Progress = Callable[[int, int], None]  # (done, total)


def backbone_outputs(backbone: Backbone, batch: torch.Tensor, *,
                     tta: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pooled features, ImageNet logits, plain features); with tta the first two are the mean
    over the image and its mirror, while the plain features are always the image's alone.

    Training and serving both go through here, so a head trained on flip-averaged
    embeddings is always served flip-averaged embeddings. The plain features are what the
    Embedding table, similarity search and near-duplicates hold for every version, so a
    flip-averaged production card still stores comparable vectors.
    """
    plain, plain_logits = backbone(batch)
    features, logits = plain, plain_logits
    if tta:
        flipped_features, flipped_logits = backbone(torch.flip(batch, dims=[3]))
        features = (plain + flipped_features) / 2
        logits = (plain_logits + flipped_logits) / 2
    return features, logits, plain


def backbone_features(backbone: Backbone, batch: torch.Tensor, *,
                      tta: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled features, ImageNet logits), as backbone_outputs gives them."""
    features, logits, _ = backbone_outputs(backbone, batch, tta=tta)
    return features, logits


class EmbeddingCache:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, sha256: str, backbone: str, tta: bool, preprocessing: Preprocessing | None = None) -> Path:
        """preprocessing: the backbone's own when None. Its key is in the path, so features made
        under a spec that has since changed are never read as today's."""
        preprocessing = preprocessing or get_spec(backbone).preprocessing
        view = f"{'flip' if tta else 'plain'}-{preprocessing.key}"
        return self.root / backbone / view / sha256[:2] / f"{sha256}.npy"

    def get(self, sha256: str, backbone: str, tta: bool,
            preprocessing: Preprocessing | None = None) -> np.ndarray | None:
        path = self.path(sha256, backbone, tta, preprocessing)
        try:
            return np.load(path)
        except (FileNotFoundError, ValueError, EOFError, OSError):
            return None  # missing, or damaged by something outside us: recompute

    def put(self, sha256: str, backbone: str, tta: bool, vector: np.ndarray,
            preprocessing: Preprocessing | None = None) -> None:
        path = self.path(sha256, backbone, tta, preprocessing)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, vector.astype(np.float32))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def embed_items(items: Sequence[Item], *, backbone: str, tta: bool = False,
                cache_dir: str | os.PathLike | None = None, batch_size: int = 32, device: str = "cpu",
                weights_dir: str | os.PathLike | None = None, model: Backbone | None = None,
                preprocessing: Preprocessing | None = None, progress: Progress | None = None) -> np.ndarray:
    """A float32 (len(items), feature_dim) array, in items' order.

    The backbone is loaded only when some image is missing from the cache; pass `model` to
    reuse one already loaded (the named backbone with its ImageNet weights: the cache key
    says nothing about other weights). The preprocessing is the backbone's own unless given.
    """
    spec = get_spec(backbone)
    preprocessing = preprocessing or spec.preprocessing
    out = np.empty((len(items), spec.feature_dim), dtype=np.float32)
    cache = EmbeddingCache(cache_dir) if cache_dir is not None else None
    shas = [item.sha256 or file_sha256(item.path) for item in items]
    missing = []
    for i, sha in enumerate(shas):
        vector = cache.get(sha, backbone, tta, preprocessing) if cache else None
        if vector is not None and vector.shape == (spec.feature_dim,):
            out[i] = vector
        else:
            missing.append(i)
    done = len(items) - len(missing)
    if progress:
        progress(done, len(items))
    if not missing:
        return out

    if model is None:
        model = load_backbone(backbone, weights_dir=weights_dir)
    model = model.to(device).eval()
    transform = preprocessing.transform()
    for start in range(0, len(missing), batch_size):
        chunk = missing[start:start + batch_size]
        batch = torch.stack([transform(decode_image(Path(items[i].path).read_bytes()).image) for i in chunk])
        with torch.inference_mode():
            features, _ = backbone_features(model, batch.to(device), tta=tta)
        features = features.float().cpu().numpy()
        for i, vector in zip(chunk, features):
            out[i] = vector
            if cache:
                cache.put(shas[i], backbone, tta, vector, preprocessing)
        done += len(chunk)
        if progress:
            progress(done, len(items))
    return out


def print_progress(prefix: str = "embed", every_s: float = 5.0) -> Progress:
    """A progress callback that writes a line to stderr at most every few seconds."""
    import sys

    last = [0.0]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] >= every_s:
            last[0] = now
            print(f"{prefix}: {done}/{total} images", file=sys.stderr, flush=True)

    return report
