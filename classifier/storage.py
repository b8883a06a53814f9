"""Image files through Django's storage API: written once by content, read as bytes or as a
local path for code that needs one (the trainer's data loader)."""

import os
import shutil
from pathlib import Path

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage


def store_once(name: str, content: bytes) -> str:
    """Content-addressed names: a file already there holds these bytes, so it is kept."""
    if default_storage.exists(name):
        return name
    return default_storage.save(name, ContentFile(content))


def read_bytes(name: str) -> bytes:
    with default_storage.open(name, "rb") as f:
        return f.read()


def local_path(name: str) -> Path:
    """A local path to a stored file; remote storages are copied once under VAR_DIR/cache."""
    try:
        return Path(default_storage.path(name))
    except NotImplementedError:
        local = Path(settings.VAR_DIR) / "cache" / "originals" / name
        if not local.is_file():
            local.parent.mkdir(parents=True, exist_ok=True)
            partial = local.with_suffix(".partial")
            with default_storage.open(name, "rb") as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(partial, local)
        return local
