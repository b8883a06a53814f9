"""How long the head takes to train on cached embeddings: 10,000 x 1280 synthetic features, 20 classes.

"seconds" times the recipe head mode runs (head.fit_recipe: weight decay and zero-shot prior
weight by stratified cross-validation on a sample of at most CV_MAX_IMAGES, then one fit on all
images, then the temperature on the out-of-fold predictions), with a random log-prior so the
prior's weights are searched too; "fit_head_seconds" the older validation-split fit, the
fine-tune's linear probe.

The features imitate pooled CNN features (non-negative, a class signal in a few hundred
dimensions, noise elsewhere), split 85/15 into train and validation like the trainer does.
It times the whole head fit (the weight-decay grid with warm starts, and the temperature),
and, as a baseline in the same process, scikit-learn's LogisticRegression at one setting.

    python -m benchmarks.train_head [--n 10000] [--dim 1280] [--classes 20] [--threads T]

The last line printed is JSON: seconds, seconds_per_candidate, sklearn_seconds, val accuracies, ...
"""

import argparse
import json
import sys
import time

import numpy as np
import torch

from classifier.ml.head import fit_head, fit_recipe, linear_logits
from classifier.ml.metrics import fit_temperature


def synthetic_embeddings(n: int, dim: int, classes: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    centres = rng.normal(size=(classes, dim)) * (rng.random(dim) < 0.3)  # ~30% of dimensions carry signal
    x = np.maximum(centres[y] * 0.22 + rng.normal(size=(n, dim)), 0.0)  # ReLU-like; ~85% separable
    return x.astype(np.float32), y


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--no-sklearn", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    x, y = synthetic_embeddings(args.n, args.dim, args.classes)
    n_val = int(0.15 * args.n)
    train_x, train_y, val_x, val_y = x[n_val:], y[n_val:], x[:n_val], y[:n_val]

    prior = np.log(np.random.default_rng(1).dirichlet(np.ones(args.classes), args.n)).astype(np.float32)
    started = time.perf_counter()
    recipe = fit_recipe(x, y, args.classes, prior=prior)
    recipe_temperature = fit_temperature(recipe.cv_logits + recipe.prior_weight * prior[recipe.cv_index],
                                         y[recipe.cv_index])
    recipe_seconds = time.perf_counter() - started
    print(f"recipe: {recipe_seconds:.2f} s, weight decay {recipe.weight_decay:g}, prior weight "
          f"{recipe.prior_weight}, temperature {recipe_temperature:.3f}, {len(recipe.cv_index)} images in CV",
          file=sys.stderr)

    started = time.perf_counter()
    fit = fit_head(train_x, train_y, val_x, val_y, args.classes)
    temperature = fit_temperature(linear_logits(fit.layer, val_x), val_y)
    seconds = time.perf_counter() - started
    best = next(c for c in fit.candidates if c.weight_decay == fit.weight_decay)
    print(f"head: {seconds:.2f} s for {len(fit.candidates)} weight decays; chose {fit.weight_decay:g} "
          f"(val accuracy {best.val_accuracy:.4f}), temperature {temperature:.3f}", file=sys.stderr)

    summary = {
        "n": args.n, "dim": args.dim, "classes": args.classes, "threads": torch.get_num_threads(),
        "seconds": round(recipe_seconds, 3), "recipe_weight_decay": recipe.weight_decay,
        "recipe_prior_weight": recipe.prior_weight, "cv_images": len(recipe.cv_index),
        "cv_accuracy": round(float((recipe.cv_logits.argmax(1) == y[recipe.cv_index]).mean()), 4),
        "fit_head_seconds": round(seconds, 3),
        "seconds_per_candidate": round(seconds / len(fit.candidates), 3),
        "weight_decay": fit.weight_decay,
        "val_accuracy": round(best.val_accuracy, 4),
    }
    if not args.no_sklearn:
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        started = time.perf_counter()
        scaler = StandardScaler().fit(train_x)
        model = LogisticRegression(C=1.0, max_iter=300).fit(scaler.transform(train_x), train_y)
        summary["sklearn_seconds_one_setting"] = round(time.perf_counter() - started, 3)
        summary["sklearn_val_accuracy"] = round(float(model.score(scaler.transform(val_x), val_y)), 4)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
