"""Model directories written atomically: all of card.json and the weights, or nothing.

Everything is written into a hidden temporary folder beside the destination, then renamed
into place in one step, so a reader (or a worker that dies half-way) never sees a directory
with a card but no weights. The card records the SHA-256 of every weights file.
"""

import json
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from .predict import CARD_FILE, ModelCard, file_sha256


def write_model_dir(out: str | os.PathLike, card: ModelCard, weights: dict[str, dict], *,
                    overwrite: bool = False) -> ModelCard:
    """Writes weights (file name -> state dict) and the card, which gains their checksums."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; a model directory is never changed in place "
                              "(choose a new output folder, or pass overwrite)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    old = None
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; web and worker processes read it
        files = {}
        for name, state in weights.items():
            torch.save(state, tmp / name)
            files[name] = file_sha256(tmp / name)
        card = replace(card, files=files)
        (tmp / CARD_FILE).write_text(json.dumps(card.to_dict(), indent=2, sort_keys=True) + "\n")
        _fsync_dir_files(tmp)
        if out.exists():  # overwrite: move the old one aside first, so the swap is two renames
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.rename(out, old / out.name)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not out.exists() and (old / out.name).exists():
            os.rename(old / out.name, out)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return card


def _fsync_dir_files(folder: Path) -> None:
    """Data on disk before the rename, so a power cut cannot leave a renamed but empty file."""
    for path in folder.iterdir():
        with open(path, "rb") as f:
            os.fsync(f.fileno())


def save_atomically(obj, path: str | os.PathLike) -> None:
    """torch.save to a temporary file beside path, then rename over it (for checkpoints)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
