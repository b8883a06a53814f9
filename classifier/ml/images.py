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
# What decoding one image may hold in memory (Pillow's pixels, the RGB copy, conversions): a
# 16-bit 7000x7000 PNG is 95 KB on disk but far more decoded. JPEGs over it are decoded at
# 1/2, 1/4 or 1/8 scale (Image.draft); other formats over it are refused.
DEFAULT_MAX_DECODED_BYTES = 256 * 1024 * 1024
# Bytes per pixel as Pillow holds each mode (3 and 4 band modes take 4), default 4.
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}


def decoded_bytes(mode: str, width: int, height: int) -> int:
    """A bound on the memory decoding takes: the pixels in their own mode, plus an RGB copy."""
    return width * height * (_MODE_BYTES.get(mode, 4) + (0 if mode == "RGB" else 4))


class InvalidImage(ValueError):
    """The bytes are not an image we can use; the message says why, for the uploader."""


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, EXIF orientation applied, first frame
    format: str  # as Pillow names it: JPEG, PNG, ...
    original_mode: str
    width: int
    height: int


def _fit_budget(im: Image.Image, max_decoded_bytes: int) -> None:
    """Decode a JPEG at a reduced scale when its full size would not fit; refuse what cannot."""
    width, height = im.size
    if decoded_bytes(im.mode, width, height) <= max_decoded_bytes:
        return
    if im.format in ("JPEG", "MPO"):
        for scale in (2, 4, 8):
            if decoded_bytes(im.mode, -(-width // scale), -(-height // scale)) <= max_decoded_bytes:
                im.draft(im.mode, (-(-width // scale), -(-height // scale)))
                return
    raise InvalidImage(
        f"The image is {width}x{height} in mode {im.mode}: {decoded_bytes(im.mode, width, height):,} bytes "
        f"decoded; the limit is {max_decoded_bytes:,}."
    )


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                 max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES) -> DecodedImage:
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
        _fit_budget(im, max_decoded_bytes)
        drafted = im.size != (width, height)
        try:
            im.seek(0)  # animated GIF/WebP/APNG: the first frame
            im.load()
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise InvalidImage(f"The image data is truncated or corrupt ({e}).") from None
        fmt = im.format
        try:
            ImageOps.exif_transpose(im, in_place=True)  # a copy would double the memory
        except Exception:  # a broken EXIF block should not cost the picture
            pass
        rgb = to_rgb(im)
    if drafted:  # the picture is smaller than the file says: report the file's own size
        width, height = (height, width) if (rgb.width > rgb.height) != (width > height) else (width, height)
        return DecodedImage(image=rgb, format=fmt, original_mode=original_mode, width=width, height=height)
    return DecodedImage(image=rgb, format=fmt, original_mode=original_mode, width=rgb.width, height=rgb.height)


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is flattened onto white."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16/32-bit integer greyscale: Pillow's convert() clips at 255, which turns most
        # photos white; scale the real range down instead.
        # In integers: float64 copies of a large 16-bit picture took gigabytes.
        arr = np.asarray(im)
        if mode.startswith("I;16") or arr.max() > 255:
            arr = np.clip(arr, 0, 65535) // 257
        else:
            arr = np.clip(arr, 0, 255)
        return Image.fromarray(arr.astype(np.uint8), mode="L").convert("RGB")
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
