"""How much the app's head gets out of a handful of labels: accuracy against labels per class.

For 1, 2, 5, 10 and 20 labelled photos per class (random draws; the rest of DIR is the test
set), in the same run and on the same draws:

- app: the app's head recipe (classifier.ml.head.fit_recipe: standardised features, weight decay
  and zero-shot prior weight chosen by stratified cross-validation over every labelled photo),
  served as the app serves it (classifier.ml.combine.CombinedHead: every class learned, "other"
  from zero-shot, temperature and "other" bias fitted on the out-of-fold predictions);
- plain: scikit-learn's LogisticRegression on standardised features, C chosen by stratified
  cross-validation (C = 1 with one photo per class, where no fold has a class twice);
- zero-shot: the zero-shot version (no labels), scored on the classes ImageNet covers; the
  app's accuracy on those same photos is what app_minus_zero_shot compares.

Features are the backbone's plain pooled features (the app's default, TRAINING_HEAD_TTA off),
computed once (cached with --cache-dir).

    python -m benchmarks.label_efficiency --data ../shared/datasets/caltech101-animals [--draws 10]
        [--plot docs/images/label_efficiency.svg]

The last line printed is JSON: per shot count the mean accuracies, app_at_5, gain_min (smallest
app - plain over the shot counts), app_minus_zero_shot_min (smallest app - zero-shot on covered
classes).
"""

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from classifier.ml.backbones import load_backbone
from classifier.ml.cards import ZERO_SHOT_TOP_K, zero_shot_temperature
from classifier.ml.class_map import OTHER, default_mapping
from classifier.ml.combine import CombinedHead, TemperedZeroShot, fit_calibration
from classifier.ml.coverage import ClassPlan
from classifier.ml.datasets import image_folder
from classifier.ml.embed import embed_items, print_progress
from classifier.ml.head import fit_recipe

SHOTS = (1, 2, 5, 10, 20)
REPO = Path(__file__).resolve().parent.parent


def features_of(root: Path, backbone: str, cache_dir) -> tuple[np.ndarray, np.ndarray, list[str]]:
    items = image_folder(root)
    network = load_backbone(backbone)
    x = embed_items(items, backbone=backbone, cache_dir=cache_dir, model=network, progress=print_progress())
    with torch.no_grad():
        g = network.imagenet_head(torch.from_numpy(x)).numpy()
    return x, g, [i.label for i in items]


def app_head(x, g, y, classes: tuple[str, ...], mapping: dict, backbone: str, seed: int) -> CombinedHead:
    """The app's recipe and serving head, every class learned."""
    plan = ClassPlan(learned=classes, zero_shot=(OTHER,), classes=classes + (OTHER,))
    head = CombinedHead(torch.nn.Identity(), classes=plan.classes, head_classes=classes,
                        imagenet_map={c: mapping[c] for c in classes if mapping[c]},
                        zero_shot_temperature=zero_shot_temperature(backbone), zero_shot_top_k=ZERO_SHOT_TOP_K)
    with torch.no_grad():
        prior = head.prior(head.prior_q(torch.from_numpy(g))).numpy()
    fit = fit_recipe(x, y, len(classes), prior=prior, seed=seed)
    head.prior_weight = fit.prior_weight
    head.temperature, head.other_bias = fit_calibration(head, fit.cv_logits, g[fit.cv_index], y[fit.cv_index])
    head.linear = fit.layer
    return head


def plain_regression(x, y, test_x, shots: int, seed: int) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings at the weakest C
        if shots >= 2:
            cv = StratifiedKFold(n_splits=min(5, shots), shuffle=True, random_state=seed)
            model = LogisticRegressionCV(Cs=[0.001, 0.01, 0.1, 1.0, 10.0], cv=cv, max_iter=1000)
        else:
            model = LogisticRegression(C=1.0, max_iter=1000)
        model.fit(scaler.transform(x), y)
    return model.predict(scaler.transform(test_x))


def one_draw(data, shots: int, draw: int, backbone: str) -> dict:
    x, g, labels, classes, mapping, zero_shot_right = data
    rng = np.random.default_rng(1000 * shots + draw)
    y_all = np.array([classes.index(label) for label in labels])
    train = np.concatenate([rng.choice(np.flatnonzero(y_all == c), shots, replace=False) for c in range(len(classes))])
    test = np.setdiff1d(np.arange(len(labels)), train)
    head = app_head(x[train], g[train], y_all[train], classes, mapping, backbone, seed=draw)
    with torch.no_grad():
        probs = head(torch.from_numpy(x[test]), torch.from_numpy(g[test])).numpy()
    app_right = probs.argmax(1) == y_all[test]  # the "other" column never matches a class
    plain_right = plain_regression(x[train], y_all[train], x[test], shots, draw) == y_all[test]
    covered = np.array([bool(mapping[labels[i]]) for i in test])
    return {"app": app_right.mean(), "plain": plain_right.mean(), "app_covered": app_right[covered].mean(),
            "zero_shot_covered": zero_shot_right[test][covered].mean()}


def svg(results: dict, path: Path) -> None:
    width, height, left, bottom, top, right = 560, 320, 56, 40, 20, 110
    lo = min(min(r[k] for r in results.values() for k in ("app", "plain", "zero_shot_covered")) - 0.02, 0.9)
    xs = {s: left + (width - left - right) * i / (len(results) - 1) for i, s in enumerate(results)}
    y = lambda a: top + (height - top - bottom) * (1 - (a - lo) / (1 - lo))  # noqa: E731
    lines = []
    for key, colour, name in (("app", "#2b6cb0", "app head"), ("plain", "#dd6b20", "plain regression"),
                              ("zero_shot_covered", "#718096", "zero-shot (covered)"),
                              ("app_covered", "#38a169", "app head (covered)")):
        points = " ".join(f"{xs[s]:.1f},{y(r[key]):.1f}" for s, r in results.items())
        last = list(results.values())[-1][key]
        lines.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>'
                     f'<text x="{width - right + 6}" y="{y(last) + 4:.1f}" font-size="11" '
                     f'fill="{colour}">{name}</text>')
    grid = "".join(f'<line x1="{left}" x2="{width - right}" y1="{y(a):.1f}" y2="{y(a):.1f}" stroke="#ddd"/>'
                   f'<text x="{left - 6}" y="{y(a) + 4:.1f}" text-anchor="end" font-size="11">{a:.2f}</text>'
                   for a in np.linspace(lo, 1.0, 6))
    ticks = "".join(f'<text x="{xs[s]:.1f}" y="{height - bottom + 16}" text-anchor="middle" font-size="11">{s}</text>'
                    for s in results)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
                    f'font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>{grid}{ticks}'
                    f'{"".join(lines)}<text x="{(width + left - right) / 2}" y="{height - 6}" text-anchor="middle" '
                    'font-size="12">labelled photos per class</text></svg>\n')


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=REPO / "docs" / "images" / "label_efficiency.svg")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    x, g, labels = features_of(args.data, args.backbone, args.cache_dir)
    classes = tuple(sorted(set(labels)))
    mapping = default_mapping(classes)
    zero_shot = TemperedZeroShot([c for c in classes if mapping[c]], mapping, zero_shot_temperature(args.backbone),
                                 ZERO_SHOT_TOP_K)
    with torch.no_grad():
        answers = zero_shot(torch.from_numpy(g)).argmax(1).numpy()
    covered = [c for c in classes if mapping[c]] + [OTHER]
    zero_shot_right = np.array([covered[a] == label for a, label in zip(answers, labels)])
    data = (x, g, labels, classes, mapping, zero_shot_right)
    results = {}
    for shots in SHOTS:
        draws = [one_draw(data, shots, d, args.backbone) for d in range(args.draws)]
        results[shots] = {k: round(float(np.mean([d[k] for d in draws])), 4) for k in draws[0]}
        print(f"{shots:>3} per class: {results[shots]}", file=sys.stderr, flush=True)
    svg(results, args.plot)
    summary = {
        "per_shot": results, "draws": args.draws, "backbone": args.backbone, "classes": len(classes),
        "app_at_5": results[5]["app"],
        "gain_min": round(min(r["app"] - r["plain"] for r in results.values()), 4),
        "app_minus_zero_shot_min": round(min(r["app_covered"] - r["zero_shot_covered"] for r in results.values()), 4),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
