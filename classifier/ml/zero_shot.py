"""Zero-shot classification: the ImageNet head summed onto the project's classes.

Before anyone labels anything, a project class such as "dog" takes the probability of every
ImageNet class mapped to it (all the breeds); ImageNet classes mapped to no project class
make up "other". Scores are renormalised to sum to one over the project's classes plus
"other".

"other" scores the single most likely unmapped ImageNet class, not their sum: the sum of
~990 unmapped classes holds most of the mass even for a clear photo of a project animal
(measured on the Caltech animals: 241 of 825 covered images went to "other", accuracy 0.71,
against 0.84 with the max). So a photo is "other" when the network names one specific
animal or object outside the project more strongly than the whole group of any project
class.

With top_k (issue 15), only each image's k most likely ImageNet classes count, for the
project's classes and for "other" alike; the rest of the 1000 are set to zero before the sum.
Without it, the long tail decides: 118 dog breeds at a few tenths of a percent each outweigh
one confident "ox", so zero-shot lost most of its errors to "dog" (measured in issue 15: the
top-5 sum lifted a set of web animal photos from 0.728 to 0.747, left the Caltech animals
unchanged, and sent more out-of-project animals to "other", 0.847 -> 0.914). Cards pin k
(cards.ModelCard.zero_shot_top_k); None, on cards made before, is the sum over all 1000.
"""

from typing import Mapping, Sequence

import torch
from torch import nn

from .class_map import (  # noqa: F401 (re-exported)
    DATA_FILE,
    OTHER,
    AnimalEntry,
    default_mapping,
    load_animal_table,
    lookup_animal,
    normalise_name,
)

NUM_IMAGENET_CLASSES = 1000


def assignment_matrix(classes: Sequence[str], mapping: Mapping[str, Sequence[int]]) -> torch.Tensor:
    """A (1000, len(classes) + 1) 0/1 matrix; the last column is "other".

    An ImageNet class claimed by two project classes (say "dog" and "dalmatian") goes to
    the more specific one, the class with fewer ImageNet indices.
    """
    if OTHER in classes:
        raise ValueError(f"{OTHER!r} is reserved for unmapped ImageNet classes")
    owner: dict[int, int] = {}
    for column, name in enumerate(classes):
        for index in mapping.get(name, ()):
            if not 0 <= int(index) < NUM_IMAGENET_CLASSES:
                raise ValueError(f"class {name!r}: ImageNet index {index} is outside 0..999")
            current = owner.get(int(index))
            if current is None or len(mapping[name]) < len(mapping[classes[current]]):
                owner[int(index)] = column
    matrix = torch.zeros(NUM_IMAGENET_CLASSES, len(classes) + 1)
    for index in range(NUM_IMAGENET_CLASSES):
        matrix[index, owner.get(index, len(classes))] = 1.0
    return matrix


class ZeroShotHead(nn.Module):
    """ImageNet logits -> probabilities over classes + other (see the module docstring)."""

    def __init__(self, classes: Sequence[str], mapping: Mapping[str, Sequence[int]], top_k: int | None = None):
        super().__init__()
        if top_k is not None and not 1 <= int(top_k) <= NUM_IMAGENET_CLASSES:
            raise ValueError(f"top_k must be between 1 and {NUM_IMAGENET_CLASSES}, got {top_k}")
        assignment = assignment_matrix(classes, mapping)
        self.register_buffer("class_assignment", assignment[:, :-1].contiguous())
        self.register_buffer("unmapped", assignment[:, -1].contiguous())
        self.top_k = None if top_k is None else int(top_k)

    def forward(self, imagenet_logits: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(imagenet_logits.float(), dim=1)
        if self.top_k is not None:
            # Exactly k per image (ties broken by torch.topk), as a 0/1 mask: ScatterElements in ONNX.
            top = torch.topk(p, self.top_k, dim=1).indices
            p = p * torch.zeros_like(p).scatter(1, top, 1.0)
        classes = p @ self.class_assignment
        other = (p * self.unmapped).amax(dim=1, keepdim=True)
        scores = torch.cat([classes, other], dim=1)
        return scores / scores.sum(dim=1, keepdim=True)
