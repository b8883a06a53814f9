"""decode_image: every upload becomes a clean RGB picture, or a clear InvalidImage."""

import io

import numpy as np
import pytest
from PIL import Image, ImageFile

from classifier.ml.images import InvalidImage, decode_image
from tests.helpers import demo_photo, make_image_bytes


def save(im: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    im.save(out, format=fmt, **options)
    return out.getvalue()


@pytest.fixture(scope="module")
def bomb_png() -> bytes:
    """20000x20000 pixels (400 million) in a few tens of KB."""
    return save(Image.new("1", (20000, 20000)), "PNG", optimize=True)


def test_it_rejects_an_empty_file():
    with pytest.raises(InvalidImage, match="empty"):
        decode_image(b"")


def test_it_rejects_text():
    with pytest.raises(InvalidImage, match="not an image"):
        decode_image(b"Dear diary, today I saw a llama.\n" * 20)


def test_it_rejects_a_truncated_jpeg():
    data = demo_photo("dalmatian").read_bytes()
    with pytest.raises(InvalidImage, match="truncated"):
        decode_image(data[: len(data) // 2])


@pytest.fixture
def pixel_loads(monkeypatch) -> list:
    """Every image whose pixels get decoded (Pillow decodes in ImageFile.load)."""
    loads = []
    original_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self) or original_load(self))
    decode_image(make_image_bytes("PNG"))
    assert loads  # the spy sees a normal decode
    loads.clear()
    return loads


def test_it_rejects_a_decompression_bomb_before_decoding(bomb_png, pixel_loads):
    assert len(bomb_png) < 100_000

    with pytest.raises(InvalidImage, match="pixels"):
        decode_image(bomb_png)
    assert pixel_loads == []


def test_it_rejects_an_image_over_its_own_limit_that_pillow_would_allow(pixel_loads):
    # 100 million pixels: over our 50 million, under the 179 million where Pillow refuses
    data = save(Image.new("1", (10000, 10000)), "PNG")

    with pytest.raises(InvalidImage, match="10000x10000"):
        decode_image(data)
    assert pixel_loads == []


def test_it_rejects_an_image_over_the_callers_pixel_limit():
    with pytest.raises(InvalidImage, match="200x100"):
        decode_image(make_image_bytes("PNG", size=(200, 100)), max_pixels=10_000)


def test_it_converts_a_cmyk_jpeg_to_rgb():
    decoded = decode_image(make_image_bytes("JPEG", size=(16, 16), mode="CMYK", color=(0, 255, 255, 0)))
    assert decoded.original_mode == "CMYK"
    assert decoded.image.mode == "RGB"
    r, g, b = decoded.image.getpixel((8, 8))
    assert r > 200 and g < 60 and b < 60  # full magenta + yellow is red


def test_it_scales_a_16_bit_greyscale_png_instead_of_clipping_it():
    gradient = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (32, 1))
    im = Image.fromarray(gradient)
    assert im.mode == "I;16"
    data = save(im, "PNG")

    decoded = decode_image(data)

    assert decoded.original_mode.startswith("I")
    assert decoded.image.mode == "RGB"
    pixels = np.asarray(decoded.image)
    assert pixels.min() < 10 and pixels.max() > 245  # the gradient survives: not all white
    assert pixels[:, 32].mean() == pytest.approx(128, abs=10)


def test_it_flattens_transparent_palette_pixels_onto_white():
    im = Image.new("P", (10, 10), 1)
    im.putpalette([0, 0, 0] + [200, 30, 30] + [0, 0, 0] * 254)
    for x in range(5):
        for y in range(10):
            im.putpixel((x, y), 0)
    data = save(im, "PNG", transparency=0)

    decoded = decode_image(data)

    assert decoded.original_mode == "P"
    assert decoded.image.getpixel((2, 5)) == (255, 255, 255)
    assert decoded.image.getpixel((7, 5)) == (200, 30, 30)


def test_it_flattens_greyscale_with_alpha_onto_white():
    im = Image.new("LA", (10, 10), (80, 255))
    im.paste((0, 0), (0, 0, 5, 10))  # left half fully transparent
    decoded = decode_image(save(im, "PNG"))

    assert decoded.original_mode == "LA"
    assert decoded.image.getpixel((2, 5)) == (255, 255, 255)
    assert decoded.image.getpixel((7, 5)) == (80, 80, 80)


def test_it_takes_the_first_frame_of_an_animated_gif():
    frames = [Image.new("RGB", (20, 20), (255, 0, 0)), Image.new("RGB", (20, 20), (0, 0, 255))]
    data = save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2

    decoded = decode_image(data)

    assert decoded.format == "GIF"
    assert decoded.image.mode == "RGB"
    assert decoded.image.getpixel((10, 10)) == (255, 0, 0)


def test_it_applies_the_exif_orientation():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = save(Image.new("RGB", (60, 30), (10, 120, 40)), "JPEG", exif=exif)

    decoded = decode_image(data)

    assert decoded.image.size == (30, 60)
    assert (decoded.width, decoded.height) == (30, 60)


def test_it_decodes_a_real_photo_as_rgb():
    decoded = decode_image(demo_photo("flamingo").read_bytes())
    assert decoded.format == "JPEG"
    assert decoded.image.mode == "RGB"
    assert decoded.image.size == (decoded.width, decoded.height)
