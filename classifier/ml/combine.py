"""One calibrated distribution over every served class: the head's learned classes, the
zero-shot classes and "other" (docs/loop.md has the measurements behind each choice).

Two stages. The zero-shot distribution q (the ImageNet head summed onto the project's mapped
classes, tempered by the zero-shot temperature) scores every class. The zero-shot mass of the
classes the head did not learn is set aside as their probability; the head shares the rest,
1 - that mass, among its learned classes and "other":

    p(c) = q(c)                                   c served by zero-shot
    p(c) = (1 - sum of those q) * softmax(s)(c)   c learned, or "other"
    s(c) = head logit(c) / T                      c learned
    s(other) = log q(other) + b  [+ head logit(other) / T once "other" is learned]

q counts each image's top zero_shot_top_k ImageNet classes where the card pins it
(zero_shot.py); the zero-shot prior of the learned classes (issue 15) keeps the sum over all
1000, the distribution its weight was measured and is cross-validated with: a top-k q is exactly
0 for every class outside the image's top k, and log 0 would make the prior a veto.

"other" is on the head's side because zero-shot scores it as the most likely unmapped
ImageNet class: for a learned class ImageNet has no class for (okapi, emu), q(other) is high,
and setting it aside would send every learned okapi to "other". The bias b is fitted on
validation with T, under a prior that keeps it near 0 when validation holds no "other".
"""

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .class_map import OTHER
from .zero_shot import ZeroShotHead

# Prior widths (in the parameter's own units) of the MAP fit of (log T, b): the prior's weight
# does not grow with the validation split, so it decides only when the data cannot. The bias
# prior is what keeps "other" reachable while nobody has labelled any (docs/loop.md).
LOG_T_PRIOR_SIGMA = 0.5
OTHER_BIAS_PRIOR_SIGMA = 1.0
EPS = 1e-12


def tempered(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(log scores / temperature): a probability vector's confidence rescaled."""
    if temperature == 1.0:
        return scores
    return torch.softmax(torch.log(scores.clamp_min(EPS)) / temperature, dim=1)


class TemperedZeroShot(nn.Module):
    """The zero-shot version's head: ZeroShotHead, then its temperature."""

    def __init__(self, classes: Sequence[str], mapping, temperature: float = 1.0, top_k: int | None = None):
        super().__init__()
        self.zero_shot = ZeroShotHead(classes, mapping, top_k)
        self.temperature = float(temperature)

    def forward(self, imagenet_logits: torch.Tensor) -> torch.Tensor:
        return tempered(self.zero_shot(imagenet_logits), self.temperature)


def _placement(rows: Sequence[str], columns: Sequence[str]) -> torch.Tensor:
    """A (len(rows), len(columns)) 0/1 matrix moving each named row to its column."""
    matrix = torch.zeros(len(rows), len(columns))
    for i, name in enumerate(rows):
        if name in columns:
            matrix[i, list(columns).index(name)] = 1.0
    return matrix


class CombinedHead(nn.Module):
    """(pooled features, ImageNet logits) -> probabilities over `classes` (see the module docstring).

    Matrix products and softmaxes only, so the ONNX export runs it as PyTorch does.
    """

    def __init__(self, linear: nn.Linear, *, classes: Sequence[str], head_classes: Sequence[str],
                 imagenet_map, temperature: float = 1.0, zero_shot_temperature: float = 1.0,
                 other_bias: float = 0.0, prior_weight: float = 0.0, zero_shot_top_k: int | None = None):
        super().__init__()
        if classes[-1] != OTHER:
            raise ValueError(f"the classes must end with {OTHER!r}, got {list(classes)}")
        self.linear = linear
        mapped = [c for c in classes[:-1] if list(imagenet_map.get(c, ()))]
        self.zero_shot = TemperedZeroShot(mapped, imagenet_map, zero_shot_temperature, zero_shot_top_k)
        # The prior's q: the same head over all 1000 ImageNet classes (module docstring).
        self.prior_zero_shot = (self.zero_shot if zero_shot_top_k is None
                                else TemperedZeroShot(mapped, imagenet_map, zero_shot_temperature))
        zs_columns = mapped + [OTHER]
        zero_shot_only = [c for c in mapped if c not in head_classes]
        self.other_learned = OTHER in head_classes
        side = list(head_classes) + ([] if self.other_learned else [OTHER])
        # q's columns of the zero-shot-only classes, into the output; their sum is set aside.
        self.register_buffer("set_aside", _placement(zs_columns, classes) * torch.tensor(
            [[1.0] if c in zero_shot_only else [0.0] for c in zs_columns]))
        self.register_buffer("other_in_q", _placement([OTHER], zs_columns)[0])
        self.register_buffer("other_in_side", _placement([OTHER], side)[0])
        self.register_buffer("head_to_side", _placement(head_classes, side))
        self.register_buffer("side_to_output", _placement(side, classes))
        # The zero-shot prior of each learned class (issue 15): its own q where it has a mapping,
        # q(other) where ImageNet has no class for it (zero-shot would call it "other").
        self.register_buffer("prior_from_q", torch.stack(
            [_placement([c if c in mapped else OTHER], zs_columns)[0] for c in head_classes], dim=1))
        self.temperature = float(temperature)
        self.other_bias = float(other_bias)
        self.prior_weight = float(prior_weight)

    def prior(self, q: torch.Tensor) -> torch.Tensor:
        """log q of each learned class (see __init__), one column per head output; q from prior_q."""
        return torch.log(q.clamp_min(EPS)) @ self.prior_from_q

    def prior_q(self, imagenet_logits: torch.Tensor) -> torch.Tensor:
        """The zero-shot distribution the prior is taken from (the module docstring)."""
        return self.prior_zero_shot(imagenet_logits)

    def side_logits(self, head_logits: torch.Tensor, q: torch.Tensor, temperature, other_bias,
                    prior_weight=None, prior_q: torch.Tensor | None = None) -> torch.Tensor:
        weight = self.prior_weight if prior_weight is None else prior_weight
        if weight:
            head_logits = head_logits + weight * self.prior(q if prior_q is None else prior_q)
        log_q_other = torch.log((q * self.other_in_q).sum(dim=1, keepdim=True).clamp_min(EPS))
        return (head_logits / temperature) @ self.head_to_side + (log_q_other + other_bias) * self.other_in_side

    def forward(self, features: torch.Tensor, imagenet_logits: torch.Tensor) -> torch.Tensor:
        return self.from_logits(self.linear(features.float()), imagenet_logits)

    def from_logits(self, head_logits: torch.Tensor, imagenet_logits: torch.Tensor) -> torch.Tensor:
        q = self.zero_shot(imagenet_logits)
        prior_q = q if self.prior_zero_shot is self.zero_shot else self.prior_q(imagenet_logits)
        return self.mix(q, self.side_logits(head_logits, q, self.temperature, self.other_bias, prior_q=prior_q))

    def mix(self, q: torch.Tensor, side_logits: torch.Tensor) -> torch.Tensor:
        zero_shot_part = q @ self.set_aside
        rest = 1.0 - zero_shot_part.sum(dim=1, keepdim=True)
        return zero_shot_part + rest * (torch.softmax(side_logits, dim=1) @ self.side_to_output)


def fit_calibration(head: CombinedHead, head_logits: np.ndarray, imagenet_logits: np.ndarray,
                    targets: Sequence[int], *, max_iter: int = 100) -> tuple[float, float]:
    """(T, b) that maximise the likelihood of targets (indices into the output classes) on
    held-out images, with log-normal and normal priors centred on T = 1, b = 0.

    Only images of learned classes or "other" say anything about T and b: a zero-shot class's
    probability is its q alone. With none, the priors' centre.
    """
    targets = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    on_side = head.side_to_output.sum(dim=0)[targets] > 0 if len(targets) else torch.zeros(0, dtype=torch.bool)
    if not bool(on_side.any()):
        return 1.0, 0.0
    with torch.no_grad():
        x = torch.as_tensor(np.asarray(head_logits), dtype=torch.float32)[on_side]
        g = torch.as_tensor(np.asarray(imagenet_logits), dtype=torch.float32)[on_side]
        q, prior_q = head.zero_shot(g), head.prior_q(g)
        y_side = (head.side_to_output.argmax(dim=0))[targets[on_side]]  # output column -> side column
    n = len(y_side)
    log_t = torch.zeros(1, dtype=torch.float32, requires_grad=True)
    bias = torch.zeros(1, dtype=torch.float32, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t, bias], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        logits = head.side_logits(x, q, log_t.exp(), bias, prior_q=prior_q)
        loss = nn.functional.cross_entropy(logits, y_side)
        loss = loss + (log_t.square().sum() / (2 * LOG_T_PRIOR_SIGMA**2)
                       + bias.square().sum() / (2 * OTHER_BIAS_PRIOR_SIGMA**2)) / n
        loss.backward()
        return loss

    optimizer.step(closure)
    t, b = float(log_t.detach().exp()), float(bias.detach())
    if not (math.isfinite(t) and math.isfinite(b)):
        return 1.0, 0.0
    return min(max(t, 0.05), 20.0), max(min(b, 20.0), -20.0)


def combined_probabilities(head: CombinedHead, head_logits: np.ndarray, imagenet_logits: np.ndarray) -> np.ndarray:
    """head(...) from the head's logits (the trainer has them for every evaluated image)."""
    with torch.no_grad():
        return head.from_logits(torch.as_tensor(np.asarray(head_logits), dtype=torch.float32),
                                torch.as_tensor(np.asarray(imagenet_logits), dtype=torch.float32)).double().numpy()
