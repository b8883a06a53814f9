"""From a mode's outcome to the served model's figures: which classes the run learns, the
calibration of the combined distribution (combine.py) and its metrics over every class.

The test metrics count every test image of the snapshot, the classes the head did not learn
included: a zero-shot class is scored by its zero-shot probability, and a class that is not
served yet has a column of zeros (its images count as errors), so a version's accuracy is
what a user of the whole project would see.
"""

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from .backbones import load_backbone
from .cards import KIND_FINETUNE, ZERO_SHOT_TOP_K, zero_shot_temperature
from .class_map import OTHER, default_mapping
from .combine import CombinedHead, combined_probabilities, fit_calibration
from .config import Outcome, TrainConfig
from .coverage import ZERO_SHOT, ClassPlan, plan_classes
from .datasets import Item, TooFewImages
from .metrics import ClassificationMetrics, classification_metrics


@dataclass
class Scores:
    temperature: float
    other_bias: float
    zero_shot_temperature: float
    prior_weight: float
    zero_shot_top_k: int | None
    val: ClassificationMetrics  # out-of-fold predictions where the head was cross-validated
    test: ClassificationMetrics
    test_before: ClassificationMetrics  # T = 1, b = 0


def class_map_of(config: TrainConfig, items: list[Item]) -> dict[str, list[int]]:
    if config.class_map is not None:
        return {k: [int(i) for i in v] for k, v in config.class_map.items() if k != OTHER}
    return default_mapping(sorted({i.label for i in items} - {OTHER}))


def class_plan(config: TrainConfig, items: list[Item], class_map: dict[str, list[int]]) -> ClassPlan:
    """Which classes this run learns; refuses (TooFewImages) what cannot give a useful version."""
    plan = plan_classes(((i.label, i.split) for i in items), class_map=class_map, min_per_class=config.min_per_class)
    if len(plan.learned) < 2:
        counts = ", ".join(f"{c} ({s['labels']})" for c, s in plan.served.items() if s["labels"]) or "nothing"
        raise TooFewImages(
            f"Training needs at least two classes with {config.min_per_class} labelled images each (one of them "
            f"in the training split); labelled so far: {counts}. Until then the zero-shot version serves.")
    dropped = [c for c in plan.zero_shot if c != OTHER]
    if config.mode == KIND_FINETUNE and dropped:
        listed = ", ".join(f"{c} (needs {plan.served[c]['needs']} more)" for c in dropped)
        raise TooFewImages(
            f"A fine-tune would drop classes it cannot learn yet: {listed}. Fine-tuning changes the backbone "
            "their zero-shot scores come from, so it serves only what it learns; label those classes, or train "
            "a head, which keeps them by their zero-shot scores.")
    return plan


def combined_head(plan: ClassPlan, class_map: dict, *, linear: nn.Module | None = None, temperature: float = 1.0,
                  zero_shot_temperature_: float = 1.0, other_bias: float = 0.0) -> CombinedHead:
    return CombinedHead(linear if linear is not None else nn.Identity(), classes=plan.classes,
                        head_classes=plan.learned, imagenet_map=class_map, temperature=temperature,
                        zero_shot_temperature=zero_shot_temperature_, other_bias=other_bias,
                        zero_shot_top_k=ZERO_SHOT_TOP_K)


@lru_cache(maxsize=2)
def _imagenet_head(backbone: str, weights_dir) -> nn.Module:
    return load_backbone(backbone, weights_dir=weights_dir).imagenet_head.eval()


def imagenet_logits(config: TrainConfig, features: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        head = _imagenet_head(config.backbone, config.weights_dir)
        return head(torch.as_tensor(features, dtype=torch.float32)).numpy()


def prior_function(config: TrainConfig, plan: ClassPlan, class_map: dict[str, list[int]]):
    """Pooled features -> the log zero-shot prior of each learned class (combine.CombinedHead.prior)."""
    head = combined_head(plan, served_map(plan, class_map),
                         zero_shot_temperature_=config.zero_shot_temperature or zero_shot_temperature(config.backbone))

    def prior(features: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return head.prior(head.prior_q(torch.as_tensor(imagenet_logits(config, features)))).numpy()

    return prior


def served_map(plan: ClassPlan, class_map: dict[str, list[int]]) -> dict[str, list[int]]:
    """The mapping of the served classes that have one: what the zero-shot part scores."""
    return {c: list(class_map[c]) for c in plan.classes[:-1] if list(class_map.get(c, ()))}


def score(config: TrainConfig, plan: ClassPlan, class_map: dict[str, list[int]], outcome: Outcome,
          val_items: list[Item], test_items: list[Item]) -> Scores:
    """Fits T and b on validation, then scores val and test over every class (the module docstring)."""
    class_map = served_map(plan, class_map)
    t_zero = config.zero_shot_temperature or zero_shot_temperature(config.backbone)
    extra = tuple(sorted({i.label for i in val_items + test_items} - set(plan.classes)))
    columns = plan.classes + extra  # not served yet: columns of zeros, so their images count as errors
    g = {name: imagenet_logits(config, f) if len(f) else np.zeros((0, 1000), np.float32)
         for name, f in (("val", outcome.val_features), ("test", outcome.test_features))}
    y = {"val": np.array([columns.index(i.label) for i in val_items], dtype=int),
         "test": np.array([columns.index(i.label) for i in test_items], dtype=int)}
    head = combined_head(plan, class_map, zero_shot_temperature_=t_zero)
    head.prior_weight = outcome.prior_weight
    served_val = y["val"] < len(plan.classes)
    temperature, bias = fit_calibration(head, outcome.val_logits[served_val], g["val"][served_val],
                                        y["val"][served_val])

    def metrics(split: str, logits: np.ndarray, t: float, b: float) -> ClassificationMetrics:
        head.temperature, head.other_bias = t, b
        probs = combined_probabilities(head, logits, g[split]) if len(logits) else np.zeros((0, len(plan.classes)))
        probs = np.concatenate([probs, np.zeros((len(probs), len(extra)))], axis=1)
        return classification_metrics(probs, y[split], columns)

    before = metrics("test", outcome.test_logits, 1.0, 0.0)
    return Scores(temperature=temperature, other_bias=bias, zero_shot_temperature=t_zero,
                  prior_weight=head.prior_weight, zero_shot_top_k=ZERO_SHOT_TOP_K,
                  val=metrics("val", outcome.val_logits, temperature, bias),
                  test=metrics("test", outcome.test_logits, temperature, bias), test_before=before)


def served_summary(plan: ClassPlan) -> dict:
    return {"learned": len(plan.learned), "zero_shot": sum(1 for c in plan.zero_shot if c != OTHER),
            "not_served": len(plan.not_served), "other": plan.served.get(OTHER, {}).get("how", ZERO_SHOT)}
