"""Which classes a version serves, and how: learned by its head, by their zero-shot score, or not yet.

A trained version learns the classes that have enough ground-truth labels; every other class
with an ImageNet mapping keeps its zero-shot score from the same backbone, and "other" is
always served. A class with neither (too few labels, no mapping) is not served yet: the card
says how many more labels it needs. Plain data, no torch: the web process reads it from cards.
"""

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from .class_map import OTHER

LEARNED = "learned"
ZERO_SHOT = "zero_shot"
NOT_SERVED = "not_served"
HOWS = (LEARNED, ZERO_SHOT, NOT_SERVED)


@dataclass(frozen=True)
class ClassPlan:
    """What one training run does with each class.

    learned: the head's outputs, in order; zero_shot: served by their zero-shot score;
    classes: the version's output order (served classes sorted, "other" last);
    served: class -> {"how", "labels", "needs"} for every class the project knows.
    """
    learned: tuple[str, ...]
    zero_shot: tuple[str, ...]
    classes: tuple[str, ...]
    served: dict[str, dict] = field(default_factory=dict)

    @property
    def not_served(self) -> dict[str, int]:
        """class -> how many more labels it needs before it is learned."""
        return {c: s["needs"] for c, s in self.served.items() if s["how"] == NOT_SERVED}


def labels_needed(*, total: int, in_train: int, minimum: int) -> int:
    """Labels a class still needs to be learned: the minimum, and one in the training split."""
    return max(minimum - total, 0 if in_train else 1)


def plan_classes(labels: Iterable[tuple[str, str]], *, class_map: Mapping[str, Iterable[int]],
                 min_per_class: int) -> ClassPlan:
    """labels: (class, split) for every ground-truth label; class_map: the project's classes
    and their ImageNet indices ([] where none). A class is learned once it has min_per_class
    labels, at least one of them in the training split; "other" likewise."""
    labels = list(labels)
    totals = Counter(label for label, _ in labels)
    in_train = Counter(label for label, split in labels if split == "train")
    names = (set(class_map) | set(totals)) - {OTHER}
    served, learned, zero_shot = {}, [], []
    for name in sorted(names) + [OTHER]:
        needs = labels_needed(total=totals[name], in_train=in_train[name], minimum=min_per_class)
        if needs == 0:
            how = LEARNED
            learned.append(name)
        elif name == OTHER or list(class_map.get(name, ())):
            how = ZERO_SHOT
            zero_shot.append(name)
        else:
            how = NOT_SERVED
        served[name] = {"how": how, "labels": totals[name], "needs": needs}
    classes = tuple(c for c in sorted(names) if served[c]["how"] != NOT_SERVED) + (OTHER,)
    return ClassPlan(learned=tuple(learned), zero_shot=tuple(zero_shot), classes=classes, served=served)


def served_classes(card) -> set[str]:
    """The classes a card can answer with (a ModelCard or its dict)."""
    data = card if isinstance(card, Mapping) else card.to_dict()
    classes = list(data.get("classes", []))
    if data.get("kind") == "zero_shot":
        mapping = data.get("imagenet_map", {})
        return {c for c in classes if c == OTHER or list(mapping.get(c, ()))}
    served = data.get("served") or {}
    if not served:  # made before versions recorded how each class is served: all of its outputs
        return set(classes)
    return {c for c in classes if served.get(c, {}).get("how", LEARNED) != NOT_SERVED}


def serving_table(card) -> dict[str, dict]:
    """class -> {"how", "labels", "needs"} for any card, the older kinds included."""
    data = card if isinstance(card, Mapping) else card.to_dict()
    if data.get("served"):
        return dict(data["served"])
    served = served_classes(data)
    how = ZERO_SHOT if data.get("kind") == "zero_shot" else LEARNED
    return {c: {"how": how if c in served else NOT_SERVED, "labels": None, "needs": None}
            for c in data.get("classes", [])}


def coverage_loss(champion, challenger) -> list[str]:
    """Classes the champion serves that the challenger does not, sorted."""
    return sorted(served_classes(champion) - served_classes(challenger))
