"""Zero-shot accuracy on an ImageFolder tree (class = folder name), with no labels at all.

The classes are made from the folder names in memory, mapped onto ImageNet with the shipped
table, and every image is predicted by the same Predictor the workers use. Only classes the
mapping covers are scored: an uncovered class can only ever be "other".

    python -m benchmarks.zero_shot --data ../shared/datasets/caltech101-animals

The last line printed is JSON: accuracy, n, classes_covered, classes_uncovered, ...
"""

import argparse
import json
import time
from collections import Counter
from pathlib import Path

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


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path, help="ImageFolder root")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit", type=int, default=0, help="at most this many images per class (0: all)")
    args = parser.parse_args(argv)

    items = image_folder(args.data)
    classes = sorted({label for _, label in items})
    mapping = default_mapping(classes)
    covered = [c for c in classes if mapping[c]]
    uncovered = [c for c in classes if not mapping[c]]
    scored = [(p, label) for p, label in items if label in covered]
    if args.limit:
        per_class: Counter = Counter()
        kept = []
        for p, label in scored:
            per_class[label] += 1
            if per_class[label] <= args.limit:
                kept.append((p, label))
        scored = kept

    predictor = Predictor(ModelCard.zero_shot(backbone=args.backbone, class_map=mapping))
    started = time.perf_counter()
    correct: Counter = Counter()
    total: Counter = Counter()
    predicted_other = 0
    for start in range(0, len(scored), args.batch_size):
        chunk = scored[start:start + args.batch_size]
        images = [decode_image(p.read_bytes()).image for p, _ in chunk]
        for (_, truth), result in zip(chunk, predictor.predict(images, top_k=1)):
            total[truth] += 1
            correct[truth] += result.label == truth
            predicted_other += result.label == "other"
    seconds = time.perf_counter() - started

    print(f"{'class':<16} {'n':>4} {'accuracy':>9}   ImageNet classes")
    for label in covered:
        n = total[label]
        print(f"{label:<16} {n:>4} {correct[label] / n if n else 0:>9.3f}   {len(mapping[label])}")
    print(f"not covered by the ImageNet mapping (not scored): {', '.join(uncovered) or '-'}")
    n = sum(total.values())
    summary = {
        "accuracy": round(sum(correct.values()) / n, 4) if n else 0.0,
        "n": n,
        "classes_covered": len(covered),
        "classes_uncovered": len(uncovered),
        "macro_accuracy": round(sum(correct[c] / total[c] for c in covered if total[c]) / len(covered), 4)
        if covered else 0.0,
        "predicted_other": predicted_other,
        "backbone": args.backbone,
        "images_per_s": round(n / seconds, 1) if seconds else None,
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
