"""Decoding uploaded bytes into a clean RGB picture, or a clear reason why not."""

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# File names taken for images when a folder or a zip is searched (decoding decides the rest).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"})
ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF"})
DEFAULT_MAX_PIXELS = 50_000_000


class InvalidImage(ValueError):
    """The bytes are not an image we can use; the message says why, for the uploader."""


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, EXIF orientation applied, first frame
    format: str  # as Pillow names it: JPEG, PNG, ...
    original_mode: str
    width: int
    height: int


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    if not data:
        raise InvalidImage("The file is empty (0 bytes).")
    with warnings.catch_warnings():
        # Pillow warns (and past twice its limit, raises) about huge images; our own
        # max_pixels check below is the one that decides.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError:
            raise InvalidImage(f"The image has too many pixels; the limit is {max_pixels:,}.") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            raise InvalidImage("The file is not an image we can read (JPEG, PNG, GIF, WebP, BMP or TIFF).") from None
        if im.format not in ACCEPTED_FORMATS:
            raise InvalidImage(
                f"Images in {im.format} format are not accepted; use one of {', '.join(sorted(ACCEPTED_FORMATS))}."
            )
        width, height = im.size
        if width * height > max_pixels:
            # Checked before any pixel is decoded: this is what stops decompression bombs.
            raise InvalidImage(
                f"The image is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,}."
            )
        if width < 1 or height < 1:
            raise InvalidImage("The image has no pixels.")
        original_mode = im.mode
        try:
            im.seek(0)  # animated GIF/WebP/APNG: the first frame
            im.load()
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise InvalidImage(f"The image data is truncated or corrupt ({e}).") from None
        fmt = im.format
        try:
            im = ImageOps.exif_transpose(im)
        except Exception:  # a broken EXIF block should not cost the picture
            pass
        rgb = to_rgb(im)
    return DecodedImage(image=rgb, format=fmt, original_mode=original_mode, width=rgb.width, height=rgb.height)


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is flattened onto white."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16/32-bit integer greyscale: Pillow's convert() clips at 255, which turns most
        # photos white; scale the real range down instead.
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(arr.astype(np.uint8), mode="L").convert("RGB")
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, im).convert("RGB")
    return im.convert("RGB")


def fit_within(im: Image.Image, size: int) -> Image.Image:
    """A copy no larger than size x size, aspect ratio kept."""
    copy = im.copy()
    copy.thumbnail((size, size), Image.Resampling.LANCZOS)
    return copy


def encode_jpeg(im: Image.Image, *, quality: int = 88) -> bytes:
    out = io.BytesIO()
    im.save(out, format="JPEG", quality=quality, optimize=True)
    return out.getvalue()


def is_image_name(name: str | os.PathLike) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def image_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given, and the image files under folders (sorted); FileNotFoundError names a
    path that does not exist."""
    found = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and is_image_name(p))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{name}: no such file or directory")
    return found
