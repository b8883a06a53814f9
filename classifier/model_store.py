"""Model versions' files through one Django storage, STORAGES["models"], and a checked local copy.

A trained version's folder (card.json and the weights it lists with their SHA-256) is written by
the trainer under MODELS_ROOT, then published: every file into the store, card.json last, and
only then is the version's row created (classifier.training.runs), so no row points at files the
store lacks. With the default store (the file system at MODELS_ROOT) publishing finds the files
already in place and copies nothing.

A node serves a version from its own MODELS_ROOT folder when that folder is complete and matches
the checksums, else from MODELS_CACHE_DIR/<card checksum>/, downloaded once: each file is
streamed into a hidden temporary folder and checked against the card (and the card against the
row's card_sha256) before the folder is renamed into place, so a half-written or corrupt file is
never served. A missing or corrupt object raises ModelStoreError naming the version and the file.
"""

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.storage import FileSystemStorage
from django.utils.module_loading import import_string

from .ml.cards import CARD_FILE, ModelCard, ModelDirError, file_sha256
from .models import ModelVersion

CHUNK = 1 << 20


class ModelStoreError(RuntimeError):
    """A version's file is missing from the model store or does not match its checksum."""


def model_storage():
    """The storage STORAGES["models"] names; FileSystemStorage defaults to MODELS_ROOT."""
    config = settings.STORAGES["models"]
    backend = import_string(config["BACKEND"])
    options = dict(config.get("OPTIONS") or {})
    if issubclass(backend, FileSystemStorage) and "location" not in options:
        options["location"] = str(settings.MODELS_ROOT)
    return backend(**options)


def _stored_path(storage, name: str) -> Path | None:
    try:
        return Path(storage.path(name))
    except NotImplementedError:  # an object store: no local path
        return None


def publish(model_dir: str, local: str | os.PathLike) -> list[str]:
    """Every file of the model folder `local` into the store under `model_dir/`, card.json last;
    the object names written (none when the store is this very folder)."""
    local, storage = Path(local), model_storage()
    card = ModelCard.load(local, verify=True)
    written = []
    for name in [*sorted(card.files), CARD_FILE]:
        target = f"{model_dir}/{name}"
        stored = _stored_path(storage, target)
        if stored is not None and stored.resolve() == (local / name).resolve():
            continue
        if storage.exists(target):  # a retried publish: replace, never save beside it
            storage.delete(target)
        with open(local / name, "rb") as f:
            saved = storage.save(target, File(f, name=name))
        if saved != target:
            raise ModelStoreError(f"the model store saved {target} as {saved}")
        written.append(target)
    return written


def _complete(folder: Path, version: ModelVersion) -> bool:
    """The folder holds this version's card and every file it lists, all matching their checksums."""
    card_path = folder / CARD_FILE
    if not card_path.is_file() or file_sha256(card_path) != version.card_sha256:
        return False
    try:
        ModelCard.load(folder, verify=True)
    except (ModelDirError, OSError, ValueError):
        return False
    return True


def local_model_dir(version: ModelVersion) -> Path | None:
    """A local folder with the version's files, checked; None for a version without files (zero-shot)."""
    if not version.model_dir:
        return None
    own = Path(settings.MODELS_ROOT) / version.model_dir
    if _complete(own, version):
        return own
    cached = Path(settings.MODELS_CACHE_DIR) / version.card_sha256
    if _complete(cached, version):
        return cached
    return _download(version, cached)


def _download(version: ModelVersion, cached: Path) -> Path:
    storage = model_storage()
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{cached.name}.", suffix=".partial", dir=cached.parent))
    try:
        _fetch(storage, version, CARD_FILE, tmp / CARD_FILE, version.card_sha256)
        card = ModelCard.load(tmp, verify=False)
        for name, sha in sorted(card.files.items()):
            _fetch(storage, version, name, tmp / name, sha)
        os.chmod(tmp, 0o755)
        if _complete(cached, version):  # another process of this node finished first: theirs is as good
            return cached
        if cached.exists():  # left incomplete by someone: replaced
            shutil.rmtree(cached, ignore_errors=True)
        os.rename(tmp, cached)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return cached


def _fetch(storage, version: ModelVersion, name: str, dest: Path, expected: str) -> None:
    target = f"{version.model_dir}/{name}"
    digest = hashlib.sha256()
    try:
        with storage.open(target, "rb") as src, open(dest, "wb") as out:
            while chunk := src.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except Exception as e:  # FileNotFoundError, or the object store's own error
        raise ModelStoreError(f"model version {version.name}: {name} is missing from the model store "
                              f"({target}): {type(e).__name__}: {e}") from e
    if digest.hexdigest() != expected:
        raise ModelStoreError(f"model version {version.name}: {name} in the model store ({target}) does not match "
                              f"its checksum (expected {expected[:12]}..., got {digest.hexdigest()[:12]}...)")
