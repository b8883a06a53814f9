"""The promotion gate: does a challenger beat the champion on the same test images?

Both models are scored on one list of test images with their true labels, by the labels they
predict (names, not indices: the two may know different classes, and a zero-shot champion
answers "other" for what it cannot place). The challenger wins only if its macro-F1 is higher
and no class's F1 drops by more than `max_class_drop`.

The per-class rule applies in full only to classes with at least `min_class_support` test
images. On a class with two test images, one image more or less moves its F1 by a third or more:
a veto there is noise, and it kept a head that lifted macro-F1 from 0.61 to 0.90 out of
production (benchmarks/retrain_latency.py). A smaller class vetoes only a drop of more than
`small_class_max_drop` (0.5: the class all but lost), and counts in macro-F1, which must rise.
"""

from dataclasses import asdict, dataclass
from typing import Sequence

from sklearn.metrics import f1_score


@dataclass(frozen=True)
class ClassChange:
    label: str
    champion_f1: float
    challenger_f1: float
    support: int
    checked: bool = True  # False: too few test images for max_class_drop; only small_class_max_drop applies

    @property
    def delta(self) -> float:
        return self.challenger_f1 - self.champion_f1


@dataclass(frozen=True)
class GateResult:
    promote: bool
    reason: str
    n: int
    champion_macro_f1: float
    challenger_macro_f1: float
    champion_accuracy: float
    challenger_accuracy: float
    per_class: list[ClassChange]

    def to_dict(self) -> dict:
        data = asdict(self)
        for row, change in zip(data["per_class"], self.per_class):
            row["delta"] = round(change.delta, 6)
        return data


def compare(truth: Sequence[str], champion: Sequence[str], challenger: Sequence[str], *,
            max_class_drop: float = 0.02, min_images: int = 1, min_class_support: int = 1,
            small_class_max_drop: float = 0.5) -> GateResult:
    """Scores both prediction lists against truth, over the classes that occur in truth."""
    if not len(truth) == len(champion) == len(challenger):
        raise ValueError(f"truth, champion and challenger differ in length: "
                         f"{len(truth)}, {len(champion)}, {len(challenger)}")
    labels = sorted(set(truth))
    n = len(truth)

    def scores(predicted):
        if n == 0:
            return 0.0, 0.0, [0.0] * len(labels)
        per_class = f1_score(truth, predicted, labels=labels, average=None, zero_division=0)
        accuracy = sum(t == p for t, p in zip(truth, predicted)) / n
        return float(per_class.mean()), accuracy, [float(f) for f in per_class]

    champ_f1, champ_acc, champ_per_class = scores(champion)
    chall_f1, chall_acc, chall_per_class = scores(challenger)
    changes = [
        ClassChange(label, champ, chall, support, support >= min_class_support)
        for label, champ, chall, support in zip(labels, champ_per_class, chall_per_class,
                                                (sum(t == label for t in truth) for label in labels))
    ]
    small_drop = max(max_class_drop, small_class_max_drop)
    dropped = [c for c in changes if c.delta < -(max_class_drop if c.checked else small_drop)]
    unchecked = sum(not c.checked for c in changes)
    if n < min_images:
        promote, reason = False, f"only {n} test images; the gate needs at least {min_images}"
    elif dropped:
        worst = ", ".join(f"{c.label} {c.champion_f1:.3f}→{c.challenger_f1:.3f}" for c in
                          sorted(dropped, key=lambda c: c.delta)[:5])
        promote, reason = False, f"F1 dropped by more than {max_class_drop:.3f} in: {worst}"
        if any(not c.checked for c in dropped):
            reason += (f" (a class with fewer than {min_class_support} test images vetoes a drop over"
                       f" {small_class_max_drop:.2f})")
    elif chall_f1 <= champ_f1:
        promote, reason = False, f"macro-F1 {chall_f1:.4f} does not beat the champion's {champ_f1:.4f}"
    else:
        promote, reason = True, f"macro-F1 {chall_f1:.4f} beats the champion's {champ_f1:.4f}"
    if unchecked and n >= min_images:
        reason += (f" ({unchecked} of {len(changes)} classes have fewer than {min_class_support} test images:"
                   f" they count in macro-F1 and veto only a drop over {small_class_max_drop:.2f})")
    return GateResult(promote, reason, n, champ_f1, chall_f1, champ_acc, chall_acc, changes)
