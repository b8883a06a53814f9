"""A tiny generated ImageFolder tree, and models trained on it once per session by the real CLIs.

Three classes of 48-pixel pictures that a linear probe tells apart at once: red blobs,
green stripes and blue checkers, each picture a little different (so each has its own
content hash). Training runs on the CPU in a few seconds.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import REPO

CLASSES = ("blue_checkers", "green_stripes", "red_blobs")
PER_CLASS = 8
SIZE = 48
# Small fractions of a tiny set: keep every class in train and something in validation.
SPLIT_ARGS = ["--test-fraction", "0.25", "--val-fraction", "0.3", "--min-per-class", "4"]
SPLIT_KWARGS = {"test_fraction": 0.25, "val_fraction": 0.3, "min_per_class": 4}
FINETUNE_SIZE = 32  # pixels: enough for coloured patterns, and a CPU epoch takes seconds


def tiny_image(label: str, index: int, size: int = SIZE) -> Image.Image:
    rng = np.random.default_rng(CLASSES.index(label) * 1000 + index)
    y, x = np.mgrid[0:size, 0:size]
    base = np.zeros((size, size, 3), dtype=np.float64)
    if label == "red_blobs":
        cy, cx = rng.integers(10, size - 10, 2)
        base[..., 0] = 255 * (((y - cy) ** 2 + (x - cx) ** 2) < (8 + index) ** 2)
    elif label == "green_stripes":
        base[..., 1] = 255 * (((x + index) // 4) % 2)
    else:
        base[..., 2] = 255 * ((((x + index) // 6) + (y // 6)) % 2)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def write_tiny_tree(root: Path, *, per_class: int = PER_CLASS, start: int = 0) -> Path:
    for label in CLASSES:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(start, start + per_class):
            tiny_image(label, i).save(root / label / f"{label}_{i:02d}.png")
    return root


def run_module(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def last_json_line(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One thread: on a busy 2-core machine, torch's thread pool waiting for a descheduled
    second thread made small ops up to 70x slower (measured: AdamW step 1.5 s against 0.03 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_tree(tmp_path_factory) -> Path:
    return write_tiny_tree(tmp_path_factory.mktemp("tiny") / "images")


@pytest.fixture(scope="session")
def embedding_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("embedding-cache")


@pytest.fixture(scope="session")
def head_model(tiny_tree, embedding_cache, tmp_path_factory):
    """A head trained in this process through the Python API (the CLI has its own test)."""
    from classifier.ml.train import TrainConfig, fit

    return fit(TrainConfig(out=tmp_path_factory.mktemp("models") / "head", data_dir=tiny_tree, mode="head",
                           cache_dir=embedding_cache, batch_size=8, **SPLIT_KWARGS))


def finetune_args(tiny_tree: Path, out: Path, checkpoint: Path, *, epochs: int, cache: Path) -> list[str]:
    return ["--data", str(tiny_tree), "--out", str(out), "--mode", "finetune", "--epochs", str(epochs),
            "--batch-size", "6", "--image-size", str(FINETUNE_SIZE), "--workers", "0", "--cache-dir", str(cache),
            "--checkpoint", str(checkpoint), *SPLIT_ARGS]


@pytest.fixture
def empty_torch_hub(tmp_path, monkeypatch):
    """Torch's hub folder and WEIGHTS_DIR point at nothing, so a developer's cache can't help."""
    monkeypatch.delenv("WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", torch.hub._hub_dir)  # restored after the test
    torch.hub.set_dir(str(tmp_path / "hub"))
    return tmp_path / "hub"


@pytest.fixture
def no_downloads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
