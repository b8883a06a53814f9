"""The promotion gate: does a challenger beat the champion on the same test images?

Both models are scored on one list of test images with their true labels, by the labels they
predict (names, not indices: the two may know different classes, and a zero-shot champion
answers "other" for what it cannot place). The challenger wins only if its macro-F1 is higher
and no class's F1 drops by more than `max_class_drop`.

Two more rules since every version serves every class (docs/loop.md): a challenger that stops
serving a class the champion serves is refused whatever its scores, and (where the caller asks
for it, as the app does) the challenger must be more accurate beyond what the test split can
tell apart, by McNemar's exact test on the same images: early test splits hold a dozen images,
and a macro-F1 that rises by one image is noise.

The per-class rule applies in full only to classes with at least `min_class_support` test
images. On a class with two test images, one image more or less moves its F1 by a third or more:
a veto there is noise, and it kept a head that lifted macro-F1 from 0.61 to 0.90 out of
production (benchmarks/retrain_latency.py). A smaller class vetoes only a drop of more than
`small_class_max_drop` (0.5: the class all but lost), and counts in macro-F1, which must rise.
"""

from dataclasses import asdict, dataclass, field
from typing import Collection, Sequence

from scipy.stats import binomtest
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
    # The paired test on the same images (McNemar's exact test): images only the champion got
    # right, images only the challenger got right, and the one-sided p-value of the latter
    # being more frequent by chance; None where no test was asked for.
    champion_only: int = 0
    challenger_only: int = 0
    p_value: float | None = None
    significance: float | None = None
    coverage_lost: list[str] = field(default_factory=list)  # classes the champion serves and it does not

    def to_dict(self) -> dict:
        data = asdict(self)
        for row, change in zip(data["per_class"], self.per_class):
            row["delta"] = round(change.delta, 6)
        return data


def mcnemar(truth: Sequence[str], champion: Sequence[str], challenger: Sequence[str]) -> tuple[int, int, float]:
    """(champion right only, challenger right only, one-sided exact p-value that the challenger's
    extra right answers are chance): a binomial test on the images where the two disagree."""
    champion_only = sum(c == t != d for t, c, d in zip(truth, champion, challenger))
    challenger_only = sum(d == t != c for t, c, d in zip(truth, champion, challenger))
    n = champion_only + challenger_only
    p = binomtest(challenger_only, n, 0.5, alternative="greater").pvalue if n else 1.0
    return champion_only, challenger_only, float(p)


def compare(truth: Sequence[str], champion: Sequence[str], challenger: Sequence[str], *,
            max_class_drop: float = 0.02, min_images: int = 1, min_class_support: int = 1,
            small_class_max_drop: float = 0.5, significance: float | None = None,
            champion_serves: Collection[str] | None = None,
            challenger_serves: Collection[str] | None = None) -> GateResult:
    """Scores both prediction lists against truth, over the classes that occur in truth.

    With `significance`, the challenger must also be more accurate beyond what the test split can
    tell apart: McNemar's exact test on the paired answers, one-sided p below `significance`.
    With the served class sets, a challenger that stops serving a class the champion serves is
    refused whatever its scores.
    """
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
    lost = sorted(set(champion_serves) - set(challenger_serves)) \
        if champion_serves is not None and challenger_serves is not None else []
    champion_only, challenger_only, p_value = mcnemar(truth, champion, challenger)
    promote, reason = _verdict(changes, n, champ_f1, chall_f1, lost, (champion_only, challenger_only, p_value),
                               max_class_drop=max_class_drop, min_images=min_images,
                               min_class_support=min_class_support, small_class_max_drop=small_class_max_drop,
                               significance=significance)
    return GateResult(promote, reason, n, champ_f1, chall_f1, champ_acc, chall_acc, changes,
                      champion_only=champion_only, challenger_only=challenger_only,
                      p_value=p_value if significance is not None else None, significance=significance,
                      coverage_lost=lost)


def _verdict(changes: list[ClassChange], n: int, champ_f1: float, chall_f1: float, lost: list[str],
             paired: tuple[int, int, float], *, max_class_drop: float, min_images: int, min_class_support: int,
             small_class_max_drop: float, significance: float | None) -> tuple[bool, str]:
    small_drop = max(max_class_drop, small_class_max_drop)
    dropped = [c for c in changes if c.delta < -(max_class_drop if c.checked else small_drop)]
    unchecked = sum(not c.checked for c in changes)
    champion_only, challenger_only, p_value = paired
    if lost:
        promote, reason = False, f"it would stop serving {', '.join(lost)}, which the champion serves"
    elif n < min_images:
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
    elif significance is not None and not p_value < significance:
        promote, reason = False, (
            f"macro-F1 {chall_f1:.4f} beats the champion's {champ_f1:.4f}, but not beyond what {n} test images can "
            f"tell apart: right where the champion was wrong on {challenger_only}, wrong where it was right on "
            f"{champion_only} (McNemar's exact test, one-sided p = {p_value:.3f}; needs below {significance:g})")
    else:
        promote, reason = True, f"macro-F1 {chall_f1:.4f} beats the champion's {champ_f1:.4f}"
        if significance is not None:
            reason += (f", and beyond chance on the same {n} images: right where the champion was wrong on "
                       f"{challenger_only}, the reverse on {champion_only} (McNemar's exact test, p = {p_value:.3g})")
    if unchecked and n >= min_images and not lost:
        reason += (f" ({unchecked} of {len(changes)} classes have fewer than {min_class_support} test images:"
                   f" they count in macro-F1 and veto only a drop over {small_class_max_drop:.2f})")
    return promote, reason
