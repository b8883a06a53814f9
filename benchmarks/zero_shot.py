"""Zero-shot accuracy on an ImageFolder tree (class = folder name), with no labels at all.

The classes are made from the folder names in memory, mapped onto ImageNet with the shipped
table, and every image is predicted by the same Predictor the workers use. Only classes the
mapping covers are scored: an uncovered class can only ever be "other".

    python -m benchmarks.zero_shot --data ../shared/datasets/caltech101-animals

The zero-shot card counts each image's top k ImageNet classes (--top-k, 5 as new versions
do; 0 sums all 1000, as versions made before). The same run also scores the sum over all 1000
from the same ImageNet logits, so the two are compared on the same images at no extra cost.

The last line printed is JSON: accuracy, n, classes_covered, classes_uncovered, top_k, ...,
and "sum_all" (accuracy, macro_accuracy, predicted_other of the sum over all 1000).
"""

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from classifier.ml.cards import ZERO_SHOT_TOP_K
from classifier.ml.combine import TemperedZeroShot
from classifier.ml.images import IMAGE_SUFFIXES, decode_image
from classifier.ml.predict import ModelCard, Predictor
from classifier.ml.zero_shot import default_mapping


def image_folder(root: Path) -> list[tuple[Path, str]]:
    items = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(class_dir.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                items.append((path, class_dir.name))
    return items


class Tally:
    def __init__(self):
        self.correct: Counter = Counter()
        self.total: Counter = Counter()
        self.other = 0

    def add(self, truth: str, label: str) -> None:
        self.total[truth] += 1
        self.correct[truth] += label == truth
        self.other += label == "other"

    def figures(self, covered: list[str]) -> dict:
        n = sum(self.total.values())
        return {
            "accuracy": round(sum(self.correct.values()) / n, 4) if n else 0.0,
            "macro_accuracy": round(sum(self.correct[c] / self.total[c] for c in covered if self.total[c])
                                    / len(covered), 4) if covered else 0.0,
            "predicted_other": self.other,
        }


def limited(scored: list, limit: int) -> list:
    if not limit:
        return scored
    per_class: Counter = Counter()
    kept = []
    for p, label in scored:
        per_class[label] += 1
        if per_class[label] <= limit:
            kept.append((p, label))
    return kept


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path, help="ImageFolder root")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit", type=int, default=0, help="at most this many images per class (0: all)")
    parser.add_argument("--top-k", type=int, default=ZERO_SHOT_TOP_K,
                        help="ImageNet classes counted per image (0: all 1000, as cards made before top-k)")
    args = parser.parse_args(argv)

    items = image_folder(args.data)
    classes = sorted({label for _, label in items})
    mapping = default_mapping(classes)
    covered = [c for c in classes if mapping[c]]
    uncovered = [c for c in classes if not mapping[c]]
    scored = limited([(p, label) for p, label in items if label in covered], args.limit)

    card = ModelCard.zero_shot(backbone=args.backbone, class_map=mapping, top_k=args.top_k or None)
    predictor = Predictor(card)
    sum_all = TemperedZeroShot(card.classes[:-1], card.imagenet_map, card.temperature, None).eval()
    started = time.perf_counter()
    tally, tally_all = Tally(), Tally()
    for start in range(0, len(scored), args.batch_size):
        chunk = scored[start:start + args.batch_size]
        images = [decode_image(p.read_bytes()).image for p, _ in chunk]
        results = predictor.predict(images, top_k=1)
        with torch.inference_mode():  # the same images' ImageNet logits, from their embeddings
            logits = predictor.backbone.imagenet_head(torch.from_numpy(np.stack([r.embedding for r in results])))
            answers = sum_all(logits).argmax(dim=1).tolist()
        for (_, truth), result, answer in zip(chunk, results, answers):
            tally.add(truth, result.label)
            tally_all.add(truth, card.classes[answer])
    seconds = time.perf_counter() - started

    print(f"{'class':<16} {'n':>4} {'accuracy':>9} {'sum-all':>8}   ImageNet classes")
    for label in covered:
        n = tally.total[label]
        print(f"{label:<16} {n:>4} {tally.correct[label] / n if n else 0:>9.3f} "
              f"{tally_all.correct[label] / n if n else 0:>8.3f}   {len(mapping[label])}")
    print(f"not covered by the ImageNet mapping (not scored): {', '.join(uncovered) or '-'}")
    n = sum(tally.total.values())
    figures = tally.figures(covered)
    summary = {
        "accuracy": figures["accuracy"],
        "n": n,
        "classes_covered": len(covered),
        "classes_uncovered": len(uncovered),
        "macro_accuracy": figures["macro_accuracy"],
        "predicted_other": figures["predicted_other"],
        "backbone": args.backbone,
        "top_k": card.zero_shot_top_k,
        "sum_all": tally_all.figures(covered),
        "images_per_s": round(n / seconds, 1) if seconds else None,
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
