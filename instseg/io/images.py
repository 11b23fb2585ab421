"""Image files: reading one as the model wants it (or one line saying why not), writing one
atomically, and instance-id images.
"""

from __future__ import annotations

import io
import logging
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from instseg.io.atomic import atomic_write_bytes

logger = logging.getLogger(__name__)

_JPEG_END_MARKER = b"\xff\xd9"
# Entropy-coded data cannot contain the end marker, so it must appear near the end of any
# complete file; a small tail window tolerates padding and short trailers.
_JPEG_TAIL_BYTES = 4096


_JPEG_MAGIC = b"\xff\xd8\xff"
# Larger images are refused before decoding (``INSTSEG.MAX_IMAGE_PIXELS``): a small file can
# declare a huge size, and decoding it would take gigabytes.
DEFAULT_MAX_PIXELS = 100_000_000
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")

_EXIF_ORIENTATION_TAG = 0x0112
# Orientations that rotate by 90 degrees, so the loader's EXIF transpose swaps width/height.
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})


class ImageReadError(Exception):
    """One input that cannot be used as an image; ``str()`` is one line naming the file."""


def jpeg_has_end_marker(path: str) -> bool:
    with open(path, "rb") as jpeg_file:
        jpeg_file.seek(0, os.SEEK_END)
        jpeg_file.seek(max(0, jpeg_file.tell() - _JPEG_TAIL_BYTES))
        return _JPEG_END_MARKER in jpeg_file.read()

    common = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
    return ", ".join(common) + ", ..."


def header_size(data: bytes) -> tuple[int | None, int | None, int] | None:
    """(width, height, pixels) from an image's header, pixels not decoded; None when the
    format is not one PIL reads headers of (OpenCV may still decode it)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                return width, height, width * height
    except Image.DecompressionBombError as e:  # PIL's own, higher limit: the size is in it
        found = _BOMB_PIXELS.search(str(e))
        return (None, None, int(found.group(1))) if found else None
    except Exception:
        return None


def exif_transposes(exif_bytes: bytes | None) -> bool:
    """Whether raw EXIF (``image.info["exif"]``) turns the image by 90 degrees, as Detectron2's
    loader applies it; read without decoding pixels."""
    if not exif_bytes:
        return False
    exif = Image.Exif()
    exif.load(exif_bytes)
    return exif.get(_EXIF_ORIENTATION_TAG) in _TRANSPOSING_ORIENTATIONS


def loaded_size(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) of an image file as the training loader sees it (EXIF orientation
    applied), from its header; ImageReadError naming the file when it cannot be used."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                transposed = exif_transposes(image.info.get("exif"))
    except FileNotFoundError:
        raise ImageReadError(f"{path}: image file not found") from None
    except Image.DecompressionBombError:
        raise ImageReadError(f"{path}: over the limit of {max_pixels / 1e6:g} megapixels") from None
    except Exception as e:  # PIL signals unreadable data with assorted exception types
        raise ImageReadError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
    if max_pixels > 0 and width * height > max_pixels:
        raise ImageReadError(
            f"{path}: {width}x{height} = {width * height / 1e6:.0f} megapixels, over the limit "
            f"of {max_pixels / 1e6:g} (INSTSEG.MAX_IMAGE_PIXELS)"
        )
    return (height, width) if transposed else (width, height)


def check_pixel_count(name: str, data: bytes, max_pixels: int) -> None:
    """Raise ImageReadError when the header declares more than ``max_pixels`` pixels."""
    size = header_size(data) if max_pixels > 0 else None
    if size is None or size[2] <= max_pixels:
        return
    width, height, pixels = size
    shape = f"{width}x{height} = " if width is not None else ""
    raise ImageReadError(
        f"{name}: {shape}{pixels / 1e6:.0f} megapixels, over the limit of "
        f"{max_pixels / 1e6:g} (INSTSEG.MAX_IMAGE_PIXELS)"
    )


def read_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as the model wants it, or say in one line why it cannot be used.

    Returns:
        np.ndarray: H x W x 3 uint8 in BGR order, exactly what ``cv2.imread(path)`` returns for a
        valid file: EXIF orientation applied, grayscale replicated to 3 channels, alpha dropped,
        16-bit samples scaled to 8 bits.

    Raises:
        ImageReadError: missing or unreadable file, empty file, more than ``max_pixels``
            pixels (read from the header; 0: no limit), truncated JPEG (OpenCV would otherwise
            decode the part that is there, grey below, and only print a warning), or data that
            no image decoder recognises.
    """
    name = os.fspath(path)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ImageReadError(f"{name}: cannot read file: {e.strerror or e}") from None
    if not data:
        raise ImageReadError(f"{name}: empty file (0 bytes)")
    check_pixel_count(name, data, max_pixels)
    if data.startswith(_JPEG_MAGIC) and not jpeg_has_end_marker(name):
        raise ImageReadError(f"{name}: truncated JPEG (no end-of-image marker)")
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as e:
        message = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise ImageReadError(f"{name}: cannot decode image: {message}") from None
    if image is None:
        raise ImageReadError(f"{name}: not an image file, or corrupt image data")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape:
        raise ImageReadError(f"{name}: unsupported image layout {image.shape} {image.dtype}")
    return image


def atomic_write_image(
    path: str | os.PathLike, image: np.ndarray, params: Sequence[int] = ()
) -> Path:
    """Encode ``image`` (H x W x 3 BGR or H x W, uint8 or uint16 for PNG/TIFF) in the format its
    name's extension names and write it atomically.

    Raises:
        ValueError: the extension has no encoder, or the encoder refused the image.
    """
    target = Path(path)
    try:
        ok, encoded = cv2.imencode(target.suffix, image, list(params))
    except cv2.error as e:
        raise ValueError(f"{target}: cannot encode {target.suffix} image: {e}") from None
    if not ok:
        raise ValueError(f"{target}: cannot encode {target.suffix} image")
    return atomic_write_bytes(target, encoded.tobytes())


def instance_id_image(masks: np.ndarray) -> np.ndarray:
    """One H x W image whose pixel values are instance ids: 1 for ``masks[0]``, 2 for
    ``masks[1]``, ... and 0 for background; where masks overlap the lower id (earlier mask) wins.

    Args:
        masks (np.ndarray): N x H x W bool, most important (highest score) first.

    Returns:
        np.ndarray: uint8 when N <= 255, else uint16 (both lossless in PNG).
    """
    count = len(masks)
    if count > np.iinfo(np.uint16).max:
        raise ValueError(f"{count} instances do not fit in a 16-bit id image")
    dtype = np.uint8 if count <= np.iinfo(np.uint8).max else np.uint16
    ids = np.zeros(masks.shape[1:], dtype=dtype)
    for index in range(count - 1, -1, -1):
        ids[masks[index]] = index + 1
    return ids
