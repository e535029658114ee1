"""Images in, one canonical form out: an 8-bit RGB PIL image, upright as the camera meant it.

Every model input and every box starts here, so a box drawn on a phone photo refers to the same pixels the
user sees: EXIF orientation is applied first, then any pixel mode (palette, alpha, 16-bit, CMYK, ...) becomes RGB.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from omniground.media.errors import MediaError, describe, require_file

MAX_PIXELS = 64_000_000  # width * height; a decoded RGB image this large is already ~190 MB
MAX_IMAGE_BYTES = 256 * 1024**2

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_BACKGROUND = (255, 255, 255, 255)  # transparent pixels become white, the colour most viewers show


def load_image(
    source: str | os.PathLike | bytes,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_IMAGE_BYTES,
) -> Image.Image:
    """Decode `source` (a path or the file's bytes) into an RGB image with EXIF orientation applied.

    The pixel count is checked from the header before any pixel is decoded, so a small file that would
    expand to gigabytes (a decompression bomb) costs nothing. Multi-frame files (GIF, TIFF) give their
    first frame. Raises MediaError for anything that cannot be decoded completely; never returns a partial image.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        label, data = "<bytes>", bytes(source)
        if not data:
            raise MediaError(label, "image data is empty (0 bytes)")
        if len(data) > max_bytes:
            raise MediaError(label, f"image data is too large ({len(data):,} bytes > limit {max_bytes:,})")
        fp: str | io.BytesIO = io.BytesIO(data)
    else:
        label = str(source)
        fp = str(require_file(source, max_bytes))

    try:
        # Our own pixel limit below is the one that counts; Pillow's global guard only warns below 2x its limit.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(fp)
    except UnidentifiedImageError:
        raise MediaError(label, "not an image (Pillow cannot identify the format)") from None
    except Image.DecompressionBombError as e:
        raise MediaError(label, f"too many pixels ({describe(e)})") from None
    except Exception as e:  # Pillow's plugins raise many types for malformed headers
        kind = "truncated image" if "truncated" in str(e).lower() else "unreadable image header"
        raise MediaError(label, f"{kind} ({describe(e)})") from None

    with image:
        width, height = image.size
        if width <= 0 or height <= 0:
            raise MediaError(label, f"image has no pixels ({width}x{height})")
        if width * height > max_pixels:
            raise MediaError(label, f"too many pixels ({width}x{height} = {width * height:,} > limit {max_pixels:,})")
        try:
            image.load()
        except Exception as e:
            kind = "truncated image" if "truncated" in str(e).lower() else "corrupt image data"
            raise MediaError(label, f"{kind} ({describe(e)})") from None
        try:
            upright = ImageOps.exif_transpose(image)
        except Exception:
            # Broken EXIF metadata does not make the pixels wrong; keep them as stored rather than lose the image.
            upright = image.copy()
        try:
            return _to_rgb(upright)
        except Exception as e:
            raise MediaError(label, f"unsupported pixel mode {image.mode!r} ({describe(e)})") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB; alpha is composited on white rather than dropped (dropping shows garbage)."""
    if image.mode in _SIXTEEN_BIT_MODES:
        # Pillow's own I;16 -> L conversion clips at 255 instead of scaling, which turns most 16-bit images white.
        values = np.asarray(image).astype(np.int64)  # (H, W), 0..65535 for 16-bit sources
        values = (np.clip(values, 0, 65535) * 255 + 32767) // 65535  # round(v / 257)
        image = Image.fromarray(values.astype(np.uint8))  # mode L
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _BACKGROUND)
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # also copies, so the result never shares a file handle with `image`
