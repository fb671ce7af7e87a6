"""Thumbnail sizing and rendering with Pillow: choosing a size, crop vs scale, formats, limits."""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image

from homeserver.config import DEFAULT_THUMBNAIL_SIZES, ThumbnailSize
from homeserver.media.thumbnails import (ImageTooLarge, NotAnImage, can_thumbnail, choose_size,
                                         image_size, make_thumbnails, target_dimensions)

CROP_32, CROP_96, SCALE_320, SCALE_640, SCALE_800 = DEFAULT_THUMBNAIL_SIZES


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("w,h,method,expected", [
    (32, 32, "crop", CROP_32), (1, 1, "crop", CROP_32), (33, 20, "crop", CROP_96),
    (96, 96, "crop", CROP_96), (200, 200, "crop", CROP_96),  # none big enough: the largest
    (100, 100, "scale", SCALE_320), (320, 240, "scale", SCALE_320), (321, 10, "scale", SCALE_640),
    (700, 500, "scale", SCALE_800), (4000, 3000, "scale", SCALE_800),
])
def test_choose_size(w: int, h: int, method: str, expected: ThumbnailSize) -> None:
    assert choose_size(DEFAULT_THUMBNAIL_SIZES, w, h, method) == expected


def test_choose_size_falls_back_to_the_other_method() -> None:
    only_scale = (ThumbnailSize(100, 100, "scale"), ThumbnailSize(500, 500, "scale"))
    assert choose_size(only_scale, 50, 50, "crop") == only_scale[0]


@pytest.mark.parametrize("src,size,expected", [
    ((400, 300), ThumbnailSize(96, 96, "crop"), (96, 96)),
    ((400, 300), ThumbnailSize(320, 240, "scale"), (320, 240)),
    ((400, 300), ThumbnailSize(100, 100, "scale"), (100, 75)),
    ((300, 400), ThumbnailSize(100, 100, "scale"), (75, 100)),
    ((50, 40), ThumbnailSize(320, 240, "scale"), (50, 40)),   # never enlarged
    ((50, 40), ThumbnailSize(96, 96, "crop"), (40, 40)),      # the crop box shrinks to fit
    ((1000, 10), ThumbnailSize(32, 32, "crop"), (10, 10)),
    ((1000, 1), ThumbnailSize(320, 240, "scale"), (320, 1)),  # never zero pixels
])
def test_target_dimensions(src: tuple[int, int], size: ThumbnailSize,
                           expected: tuple[int, int]) -> None:
    assert target_dimensions(*src, size) == expected


def test_crop_takes_the_centre() -> None:
    # Left third red, middle third green, right third blue: a square crop is all green.
    img = Image.new("RGB", (300, 100), "red")
    img.paste(Image.new("RGB", (100, 100), "green"), (100, 0))
    img.paste(Image.new("RGB", (100, 100), "blue"), (200, 0))
    [thumb] = make_thumbnails(encode(img, "PNG"), [ThumbnailSize(32, 32, "crop")], 10**6)
    out = Image.open(io.BytesIO(thumb.data)).convert("RGB")
    assert out.size == (32, 32)
    assert {out.getpixel((x, y)) for x in (2, 16, 29) for y in (2, 16, 29)} == {(0, 128, 0)}
    # Scaling keeps everything.
    [scaled] = make_thumbnails(encode(img, "PNG"), [ThumbnailSize(96, 96, "scale")], 10**6)
    out = Image.open(io.BytesIO(scaled.data)).convert("RGB")
    assert out.size == (96, 32)
    assert out.getpixel((2, 16))[0] > 200 and out.getpixel((93, 16))[2] > 200


def test_formats() -> None:
    sizes = [ThumbnailSize(32, 32, "crop")]
    rgba = Image.new("RGBA", (64, 64), (255, 0, 0, 0))
    [t] = make_thumbnails(encode(rgba, "PNG"), sizes, 10**6)
    assert t.content_type == "image/png"
    assert Image.open(io.BytesIO(t.data)).mode == "RGBA"  # transparency survives
    [t] = make_thumbnails(encode(Image.new("RGB", (64, 64)), "JPEG"), sizes, 10**6)
    assert t.content_type == "image/jpeg" and Image.open(io.BytesIO(t.data)).format == "JPEG"
    gif = Image.new("P", (64, 64))
    frames = [gif, Image.new("P", (64, 64), 3)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    [t] = make_thumbnails(data, sizes, 10**6)
    assert t.content_type == "image/png" and (t.width, t.height) == (32, 32)
    [t] = make_thumbnails(encode(Image.new("RGB", (64, 64)), "WEBP"), sizes, 10**6)
    assert t.content_type == "image/png"


def test_one_decode_makes_every_size() -> None:
    data = encode(Image.new("RGB", (1000, 800), "white"), "JPEG")
    made = make_thumbnails(data, DEFAULT_THUMBNAIL_SIZES, 32 * 1024 * 1024)
    assert [(t.width, t.height) for t in made] == [(32, 32), (96, 96), (300, 240), (600, 480),
                                                   (750, 600)]
    for t in made:
        assert Image.open(io.BytesIO(t.data)).size == (t.width, t.height)


def test_not_images() -> None:
    sizes = [ThumbnailSize(32, 32, "crop")]
    for data in (b"", b"plain text", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40):
        with pytest.raises(NotAnImage):
            make_thumbnails(data, sizes, 10**6)
    # A truncated image decodes to an error, not a crash.
    data = encode(Image.new("RGB", (200, 200), "red"), "PNG")
    with pytest.raises(NotAnImage):
        make_thumbnails(data[: len(data) // 2], sizes, 10**6)
    # Formats outside the list (even ones Pillow reads) are refused.
    with pytest.raises(NotAnImage):
        make_thumbnails(encode(Image.new("RGB", (8, 8)), "TIFF"), sizes, 10**6)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb_is_refused_before_decoding() -> None:
    # 144 million pixels in a small file: refused from the header, quickly.
    data = encode(Image.new("1", (12_000, 12_000)), "PNG")
    assert len(data) < 1_000_000
    start = time.monotonic()
    with pytest.raises(ImageTooLarge):
        make_thumbnails(data, [ThumbnailSize(32, 32, "crop")], 32 * 1024 * 1024)
    with pytest.raises(ImageTooLarge):
        image_size(data, 32 * 1024 * 1024)
    assert time.monotonic() - start < 1.0
    assert image_size(data, 200_000_000) == (12_000, 12_000)
    # Past twice Pillow's own limit it refuses to open at all; still "too large".
    huge = encode(Image.new("1", (20_000, 10_000)), "PNG")
    with pytest.raises(ImageTooLarge):
        image_size(huge, 10**10)


def test_can_thumbnail() -> None:
    assert can_thumbnail("image/png") and can_thumbnail("IMAGE/JPEG; charset=x")
    assert not can_thumbnail("image/svg+xml") and not can_thumbnail(None)
    assert not can_thumbnail("text/html")
