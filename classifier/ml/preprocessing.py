"""Preprocessing pinned to a backbone (and copied into each model card)."""

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Sequence

from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    # Plain data, read by the web process through model cards; torch and torchvision are
    # imported only by the methods that build transforms, which run where models run.
    resize_size: int = 256
    crop_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def key(self) -> str:
        """A short name of these settings, for caches of what they produce ("256-224-bicubic-3f2a9c1e")."""
        digest = hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.resize_size}-{self.crop_size}-{self.interpolation}-{digest}"

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocessing":
        return cls(
            resize_size=int(data["resize_size"]),
            crop_size=int(data["crop_size"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            interpolation=str(data.get("interpolation", "bilinear")),
        )

    def transform(self):
        """Evaluation transform (a torchvision v2.Compose): resize the short side, centre crop, normalise."""
        import torch
        from torchvision.transforms import InterpolationMode, v2

        return v2.Compose(
            [
                v2.Resize(self.resize_size, interpolation=InterpolationMode(self.interpolation), antialias=True),
                v2.CenterCrop(self.crop_size),
                v2.PILToTensor(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(mean=list(self.mean), std=list(self.std)),
            ]
        )

    def batch(self, images: Sequence[Image.Image]):
        """The images through transform(), stacked into one (n, 3, crop, crop) tensor."""
        import torch

        transform = self.transform()
        return torch.stack([transform(im.convert("RGB") if im.mode != "RGB" else im) for im in images])
