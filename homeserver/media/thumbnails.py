"""Thumbnails with Pillow: which configured size answers a request, and making it.

``crop`` fills the size exactly (cutting the longer side), ``scale`` fits the image inside it
keeping its aspect ratio; neither enlarges a small image. Decoding happens only after the
image's header says it is within ``max_image_pixels``, so a small file that would expand to
gigabytes (a "decompression bomb") is refused before it is decoded. These functions block:
callers run them in a thread.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Iterable

from PIL import Image, ImageOps

from homeserver.config import ThumbnailSize
from homeserver.media.types import base_type

# Image types Pillow decodes that are worth thumbnailing. SVG is deliberately absent.
THUMBNAILABLE_TYPES = frozenset({"image/jpeg", "image/jpg", "image/pjpeg", "image/png",
                                 "image/apng", "image/gif", "image/webp", "image/bmp"})
_FORMATS = {"JPEG", "PNG", "GIF", "WEBP", "BMP"}

# Pillow warns about images past its own pixel limit (and refuses those past twice it, which
# we report as too large); max_image_pixels, checked before decoding, is the limit that counts.
# Set once here: warnings.catch_warnings() is not thread-safe.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class NotAnImage(Exception):
    """The content cannot be thumbnailed (not an image, or an image Pillow cannot read)."""


class ImageTooLarge(Exception):
    """The image has more pixels than max_image_pixels."""


@dataclass(frozen=True)
class Thumbnail:
    size: ThumbnailSize  # the configured size it was made for
    width: int           # the image's own dimensions
    height: int
    content_type: str
    data: bytes


def can_thumbnail(content_type: str | None) -> bool:
    return base_type(content_type) in THUMBNAILABLE_TYPES


def choose_size(sizes: Iterable[ThumbnailSize], width: int, height: int,
                method: str) -> ThumbnailSize:
    """The smallest configured size at least ``width`` x ``height``, else the largest.

    Sizes made with the requested method are preferred; another method's sizes are used only
    when none is configured for it.
    """
    sizes = list(sizes)
    candidates = [s for s in sizes if s.method == method] or sizes
    big_enough = [s for s in candidates if s.width >= width and s.height >= height]
    if big_enough:
        return min(big_enough, key=lambda s: (s.width * s.height, s.width, s.height))
    return max(candidates, key=lambda s: (s.width * s.height, s.width, s.height))


def target_dimensions(src_w: int, src_h: int, size: ThumbnailSize) -> tuple[int, int]:
    """The output dimensions for an image of ``src_w`` x ``src_h`` at ``size``."""
    if size.method == "crop":
        # Never enlarge: shrink the requested box until it fits in the source, same ratio.
        factor = min(1.0, src_w / size.width, src_h / size.height)
        return max(1, round(size.width * factor)), max(1, round(size.height * factor))
    factor = min(1.0, size.width / src_w, size.height / src_h)
    return max(1, round(src_w * factor)), max(1, round(src_h * factor))


def _open(data: bytes, max_pixels: int) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(str(e)) from None
    except (OSError, ValueError, SyntaxError) as e:
        raise NotAnImage(str(e)) from None
    if img.format not in _FORMATS:
        raise NotAnImage(f"unsupported image format {img.format}")
    w, h = img.size
    if w <= 0 or h <= 0:
        raise NotAnImage("image has no pixels")
    if w * h > max_pixels:
        raise ImageTooLarge(f"{w}x{h} is more than {max_pixels} pixels")
    return img


def image_size(data: bytes, max_pixels: int) -> tuple[int, int]:
    """Width and height from the header alone; raises NotAnImage / ImageTooLarge."""
    return _open(data, max_pixels).size


def _decode(data: bytes, max_pixels: int, largest: tuple[int, int]) -> tuple[Image.Image, str]:
    img = _open(data, max_pixels)
    fmt = img.format
    if fmt == "JPEG":
        # Let the JPEG decoder skip detail the largest thumbnail cannot show.
        img.draft("RGB", (largest[0] * 2, largest[1] * 2))
    try:
        img.seek(0)  # the first frame of an animation
        img.load()
        img = ImageOps.exif_transpose(img)
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(str(e)) from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise NotAnImage(str(e)) from None
    if fmt == "JPEG":
        return img.convert("RGB"), "image/jpeg"
    # PNG keeps transparency; palette and other modes become RGB(A).
    mode = "RGBA" if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info else "RGB"
    return img.convert(mode), "image/png"


def _resize(img: Image.Image, size: ThumbnailSize) -> Image.Image:
    src_w, src_h = img.size
    out_w, out_h = target_dimensions(src_w, src_h, size)
    if size.method == "crop":
        # The largest centred region with the output's aspect ratio, then scaled down to it.
        if src_w * out_h > out_w * src_h:
            crop_w, crop_h = max(1, round(src_h * out_w / out_h)), src_h
        else:
            crop_w, crop_h = src_w, max(1, round(src_w * out_h / out_w))
        left, top = (src_w - crop_w) // 2, (src_h - crop_h) // 2
        img = img.crop((left, top, left + crop_w, top + crop_h))
    if img.size != (out_w, out_h):
        img = img.resize((out_w, out_h), Image.Resampling.LANCZOS)
    return img


def _encode(img: Image.Image, content_type: str) -> bytes:
    out = io.BytesIO()
    if content_type == "image/jpeg":
        img.save(out, "JPEG", quality=80, optimize=True)
    else:
        img.save(out, "PNG", optimize=True)
    return out.getvalue()


def make_thumbnails(data: bytes, sizes: Iterable[ThumbnailSize], max_pixels: int) -> list[Thumbnail]:
    """Decode ``data`` once and render each size. Raises NotAnImage or ImageTooLarge."""
    sizes = list(sizes)
    if not sizes:
        return []
    largest = (max(s.width for s in sizes), max(s.height for s in sizes))
    img, content_type = _decode(data, max_pixels, largest)
    out = []
    for size in sizes:
        thumb = _resize(img, size)
        out.append(Thumbnail(size, thumb.width, thumb.height, content_type,
                             _encode(thumb, content_type)))
    return out
