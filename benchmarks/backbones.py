"""Accuracy against speed for the EfficientNet-Lite backbones, in one run, for the README's table.

For each backbone (default Lite0, Lite1, Lite2), on a 70/30 content-hash split of DIR
(`--split trainer`, the default: datasets.stable_split, the salted hash the trainer itself
splits by; `--split sha256`: the photos whose SHA-256 begins below 0.3 of the range, the split
issue 15's own figures were measured on):

- accuracy: what `python -m classifier.ml.train --data TRAIN --mode head --backbone B` then
  `python -m classifier.ml.predict` on TEST give: the trainer's fit() on the training part with
  the CLI's defaults (its own internal split, the recipe, the head refitted on every image),
  then the served model on every test photo, through ONNX Runtime (the model exported with
  export_onnx, which checks it against PyTorch first);
- speed: images per second through ONNX Runtime on this CPU (OrtPredictor.predict, from decoded
  pictures: preprocessing and the network, flip-averaged as the trained card serves it), batches
  of 16 test photos taken in turn by the backbones, so load from other processes falls on all
  of them alike.

    python -m benchmarks.backbones --data ../shared/datasets/caltech101-animals
        [--backbones efficientnet_lite0,efficientnet_lite1] [--split trainer|sha256] [--cache-dir D] [--threads N]

The last line printed is JSON: per backbone accuracy, macro-F1, images_per_s, ms_per_image,
the chosen weight decay and prior weight; the load average before and after, threads, CPU.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

from benchmarks.inference import cpu_name
from classifier.ml.cards import file_sha256
from classifier.ml.config import TrainConfig
from classifier.ml.datasets import DEFAULT_TEST_FRACTION, TEST, Item, image_folder, stable_split
from classifier.ml.export import ONNX_FILE, export_onnx
from classifier.ml.images import decode_image
from classifier.ml.ort import OrtPredictor, default_threads
from classifier.ml.predict import Predictor
from classifier.ml.train import fit

LITES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
BATCH = 16  # the predict CLI's batch size
REPO = Path(__file__).resolve().parent.parent


def in_test(sha: str, how: str, test_fraction: float) -> bool:
    if how == "sha256":
        return int(sha[:8], 16) / 16**8 < test_fraction
    return stable_split(sha, test_fraction=test_fraction) == TEST


def split(root: Path, test_fraction: float, how: str = "trainer") -> tuple[list[Item], list[Item]]:
    """(training items with no split, so the trainer splits them as it splits a folder; test items)."""
    train, test = [], []
    for item in image_folder(root):
        sha = file_sha256(item.path)
        (test if in_test(sha, how, test_fraction) else train).append(Item(item.path, item.label, sha256=sha))
    return train, test


def train(backbone: str, items: list[Item], out: Path, cache_dir: Path | None) -> dict:
    config = TrainConfig(out=out, items=items, backbone=backbone, cache_dir=cache_dir, refit_on_all=True)
    return fit(config, progress=lambda event: None).summary


def serving(out: Path, check: list, threads: int) -> OrtPredictor:
    predictor = Predictor.from_dir(out)
    export_onnx(predictor, out / ONNX_FILE, check_images=check)
    return OrtPredictor(predictor.card, out / ONNX_FILE, threads=threads, model_dir=out)


def predict_in_turn(servers: dict[str, OrtPredictor], images: list) -> dict[str, dict]:
    """Every test photo through every server, one batch each in turn; their labels and timings."""
    labels = {name: [] for name in servers}
    seconds = dict.fromkeys(servers, 0.0)
    for start in range(0, len(images), BATCH):
        batch = images[start:start + BATCH]
        for name, server in servers.items():
            began = time.perf_counter()
            results = server.predict(batch, top_k=1)
            seconds[name] += time.perf_counter() - began
            labels[name] += [r.label for r in results]
    return {name: {"labels": labels[name], "seconds": seconds[name]} for name in servers}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.backbones", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "datasets" / "caltech101-animals")
    parser.add_argument("--backbones", default=",".join(LITES))
    parser.add_argument("--cache-dir", type=Path, default=None, help="embedding cache folder (kept between runs)")
    parser.add_argument("--test-fraction", type=float, default=DEFAULT_TEST_FRACTION)
    parser.add_argument("--split", choices=("trainer", "sha256"), default="trainer",
                        help="which 70/30 content-hash split (the module docstring)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: the server's)")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    threads = args.threads or default_threads()
    load_before = os.getloadavg()
    train_items, test_items = split(args.data, args.test_fraction, args.split)
    images = [decode_image(Path(i.path).read_bytes()).image for i in test_items]
    truth = [i.label for i in test_items]
    summaries, servers = {}, {}
    with tempfile.TemporaryDirectory(prefix="backbones-") as tmp:
        for backbone in backbones:
            print(f"{backbone}: training on {len(train_items)} photos", file=sys.stderr, flush=True)
            summaries[backbone] = train(backbone, train_items, Path(tmp) / backbone, args.cache_dir)
            servers[backbone] = serving(Path(tmp) / backbone, images[:4], threads)
        print(f"predicting {len(images)} test photos with each", file=sys.stderr, flush=True)
        predicted = predict_in_turn(servers, images)
    result = {"data": str(args.data), "split": args.split, "n_train": len(train_items), "n_test": len(test_items),
              "threads": threads,
              "cpu": cpu_name(), "load_before": [round(v, 2) for v in load_before],
              "load_after": [round(v, 2) for v in os.getloadavg()], "backbones": {}}
    for backbone in backbones:
        got, spent = predicted[backbone]["labels"], predicted[backbone]["seconds"]
        accuracy = float(np.mean([g == t for g, t in zip(got, truth)]))
        macro_f1 = float(f1_score(truth, got, labels=sorted(set(truth)), average="macro"))
        s = summaries[backbone]
        result["backbones"][backbone] = {
            "accuracy": round(accuracy, 4), "macro_f1": round(macro_f1, 4),
            "errors": int(sum(g != t for g, t in zip(got, truth))),
            "images_per_s": round(len(images) / spent, 2), "ms_per_image": round(1000 * spent / len(images), 1),
            "weight_decay": s["weight_decay"], "prior_weight": s["prior_weight"], "tta": s["tta"],
        }
        print(f"{backbone}: accuracy {accuracy:.4f} ({result['backbones'][backbone]['errors']} errors), "
              f"{len(images) / spent:.1f} img/s", file=sys.stderr, flush=True)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
