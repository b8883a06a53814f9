"""The zero-shot version's temperature, fitted once on an ImageFolder tree (the shared Caltech
animals), and its expected calibration error before and after, there and on a second set.

The classes are the folder names, mapped onto ImageNet with the shipped table; a class the
table does not cover is "other" for zero-shot, so its images count as "other". The
temperature T rescales the zero-shot distribution q as softmax(log q / T); it is the maximum-
likelihood T over every image of --data (no prior: a thousand images decide it). The value to
record is classifier.ml.combine.ZERO_SHOT_TEMPERATURES[backbone]; the zero-shot card carries it.

    python -m benchmarks.zero_shot_temperature --data ../shared/datasets/caltech101-animals \\
        [--check demo/photos] [--backbone efficientnet_lite0] [--cache-dir DIR]

The last line printed is JSON: temperature, and ECE/NLL/accuracy before and after on each set.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from classifier.ml.backbones import load_backbone
from classifier.ml.cards import ZERO_SHOT_TOP_K
from classifier.ml.class_map import OTHER, default_mapping
from classifier.ml.combine import tempered
from classifier.ml.datasets import image_folder
from classifier.ml.embed import embed_items, print_progress
from classifier.ml.metrics import classification_metrics, fit_temperature
from classifier.ml.zero_shot import ZeroShotHead


def zero_shot_scores(root: Path, extra_classes: list[str], *, backbone: str, cache_dir,
                     top_k: int | None = ZERO_SHOT_TOP_K) -> tuple:
    """(q over classes + other, targets, class names) for every image under root, the classes
    being its folder names and extra_classes; a class with no ImageNet mapping counts as "other"."""
    items = image_folder(root)
    classes = sorted({i.label for i in items} | set(extra_classes))
    mapping = default_mapping(classes)
    network = load_backbone(backbone)
    features = embed_items(items, backbone=backbone, cache_dir=cache_dir, model=network,
                           progress=print_progress(f"embed {root.name}"))
    with torch.no_grad():
        q = ZeroShotHead(classes, mapping, top_k)(network.imagenet_head(torch.from_numpy(features))).double().numpy()
    names = classes + [OTHER]
    targets = np.array([names.index(i.label) if mapping[i.label] else len(classes) for i in items])
    return q, targets, names


def figures(q: np.ndarray, targets: np.ndarray, names: list[str], temperature: float) -> dict:
    p = tempered(torch.from_numpy(q), temperature).numpy()
    m = classification_metrics(p, targets, names)
    return {"ece": round(m.ece, 4), "nll": round(m.nll, 4), "accuracy": round(m.accuracy, 4),
            "mean_confidence": round(float(p.max(axis=1).mean()), 4), "n": m.n}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path, help="ImageFolder the temperature is fitted on")
    parser.add_argument("--check", type=Path, default=Path(__file__).resolve().parent.parent / "demo" / "photos",
                        help="a second ImageFolder, only scored (default: the demo photos)")
    parser.add_argument("--check-extra-classes", default="dog,cat",
                        help="classes the check project has beside its folders (demo_setup adds dog and cat)")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--cache-dir", type=Path, default=None, help="embedding cache folder")
    parser.add_argument("--top-k", type=int, default=ZERO_SHOT_TOP_K,
                        help="ImageNet classes counted per image, as new cards pin it (0: all 1000, as old cards)")
    args = parser.parse_args(argv)
    top_k = args.top_k or None

    q, targets, names = zero_shot_scores(args.data, [], backbone=args.backbone, cache_dir=args.cache_dir,
                                      top_k=top_k)
    # fit_temperature works on logits; log q is the zero-shot version's (softmax(log q) = q).
    temperature = fit_temperature(np.log(np.clip(q, 1e-12, 1.0)), targets, prior_sigma=0)
    summary = {"backbone": args.backbone, "top_k": top_k, "temperature": round(temperature, 4),
               "fit_on": {"data": str(args.data), "before": figures(q, targets, names, 1.0),
                          "after": figures(q, targets, names, temperature)}}
    if args.check and args.check.is_dir():
        extra = [c for c in args.check_extra_classes.split(",") if c]
        check_q, check_targets, check_names = zero_shot_scores(args.check, extra, backbone=args.backbone,
                                                               cache_dir=args.cache_dir, top_k=top_k)
        summary["check"] = {"data": str(args.check), "extra_classes": extra,
                            "before": figures(check_q, check_targets, check_names, 1.0),
                            "after": figures(check_q, check_targets, check_names, temperature)}
    print(f"zero-shot temperature for {args.backbone}: {temperature:.4f}", file=sys.stderr)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
