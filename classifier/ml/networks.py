"""The fine-tuned network: a backbone's trunk with a linear head over the project's classes."""

import torch
from torch import nn


class ImageClassifier(nn.Module):
    """trunk -> pooled features -> dropout -> linear; forward gives (features, logits)."""

    def __init__(self, trunk: nn.Module, feature_dim: int, num_classes: int, *, dropout: float = 0.2):
        super().__init__()
        self.trunk = trunk
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.trunk(x)
        return features, self.head(self.dropout(features))
