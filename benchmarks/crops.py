"""Which part of the photo a backbone should see: its features' accuracy per input crop.

For each `resize/crop` given (the short side resized to `resize`, then the centre `crop` x
`crop`; the backbone's own normalisation and interpolation), in one run:

- head: the app's head recipe (classifier.ml.head.fit_recipe, without the zero-shot prior) in
  repeated stratified 5-fold cross-validation over every photo of DIR: fitted on four folds,
  scored on the fifth; flip-averaged features, as trained heads are served;
- zero-shot: the zero-shot head's accuracy (top 5 ImageNet classes) on the classes ImageNet
  covers, from the same features.

No split is held out, so the choice is not tuned on any test set a bar is measured on.

    python -m benchmarks.crops --data ../shared/datasets/caltech101-animals
        [--backbone efficientnet_lite0] [--crops 256/224,224/224,256/256] [--repeats 2] [--cache-dir D]

The last line printed is JSON: per crop the mean head accuracy, each repeat's, and zero-shot's.
"""

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from classifier.ml.backbones import get_spec, load_backbone
from classifier.ml.cards import ZERO_SHOT_TOP_K
from classifier.ml.class_map import OTHER, default_mapping
from classifier.ml.combine import TemperedZeroShot
from classifier.ml.datasets import image_folder
from classifier.ml.embed import embed_items, print_progress
from classifier.ml.head import fit_recipe, linear_logits, stratified_folds

REPO = Path(__file__).resolve().parent.parent
FOLDS = 5


def head_accuracy(x: np.ndarray, y: np.ndarray, repeats: int) -> list[float]:
    out = []
    for repeat in range(repeats):
        fold = stratified_folds(y, FOLDS, 100 + repeat)
        correct = 0
        for f in range(FOLDS):
            inside = fold != f
            fit = fit_recipe(x[inside], y[inside], int(y.max()) + 1, seed=repeat)
            correct += int((linear_logits(fit.layer, x[~inside]).argmax(1) == y[~inside]).sum())
        out.append(correct / len(y))
    return out


def zero_shot_accuracy(network, x: np.ndarray, labels: np.ndarray) -> float:
    mapping = default_mapping(sorted(set(labels)))
    mapped = [c for c in sorted(mapping) if mapping[c]]
    head = TemperedZeroShot(mapped, mapping, 1.0, ZERO_SHOT_TOP_K)
    with torch.no_grad():
        predicted = np.array(mapped + [OTHER])[head(network.imagenet_head(torch.from_numpy(x))).numpy().argmax(1)]
    covered = np.isin(labels, mapped)
    return float((predicted[covered] == labels[covered]).mean())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.crops", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "datasets" / "caltech101-animals")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--crops", default="256/224,224/224,256/256", help="resize/crop pairs, comma-separated")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    items = image_folder(args.data)
    labels = np.array([i.label for i in items])
    y = np.unique(labels, return_inverse=True)[1]
    network = load_backbone(args.backbone)
    own = get_spec(args.backbone).preprocessing
    result = {"backbone": args.backbone, "n": len(items), "repeats": args.repeats,
              "own": f"{own.resize_size}/{own.crop_size}", "crops": {}}
    for pair in args.crops.split(","):
        resize, crop = (int(v) for v in pair.split("/"))
        preprocessing = replace(own, resize_size=resize, crop_size=crop)
        x = embed_items(items, backbone=args.backbone, tta=True, cache_dir=args.cache_dir, model=network,
                        preprocessing=preprocessing, progress=print_progress(f"embed {pair}"))
        accs = head_accuracy(x, y, args.repeats)
        result["crops"][pair] = {"head": round(float(np.mean(accs)), 4), "head_repeats": [round(a, 4) for a in accs],
                                 "zero_shot_covered": round(zero_shot_accuracy(network, x, labels), 4)}
        print(f"{pair}: {result['crops'][pair]}", file=sys.stderr, flush=True)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
