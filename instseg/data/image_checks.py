"""Checks of the image files a COCO dataset names: they decode, their size matches the JSON
(after EXIF orientation), JPEGs are complete; mixed into the dataset checker.
"""

from __future__ import annotations

import logging
import re

from PIL import Image, UnidentifiedImageError

from instseg.data.annotation_checks import ImageRecord
from instseg.io.images import DEFAULT_MAX_PIXELS, exif_transposes, jpeg_has_end_marker

logger = logging.getLogger(__name__)


class ImageFileChecks:
    """Image-file checks; the host class provides ``error`` and ``warning``."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    verify_images: bool = True  # also check the data, not only the header

    def _limit(self) -> str:
        return f"{self.max_pixels / 1e6:g} megapixels (INSTSEG.MAX_IMAGE_PIXELS)"

    def _check_image_file(self, path: str, record: ImageRecord) -> None:
        label = record.label
        try:
            with Image.open(path) as image:
                width, height = image.size
                image_format = image.format
                # Raw EXIF from the header; getexif() may decode pixels, which verify forbids.
                exif_bytes = image.info.get("exif")
                if self.verify_images:
                    image.verify()
            transposed = exif_transposes(exif_bytes)
        except FileNotFoundError:
            self.error(label, "image file not found", file=path)
            return
        except UnidentifiedImageError:
            self.error(label, "not a recognizable image file", file=path)
            return
        except Image.DecompressionBombError as exc:
            found = re.search(r"\((\d+) pixels\)", str(exc))
            declared = f"{int(found.group(1)) / 1e6:.0f} megapixels, " if found else ""
            self.error(label, f"image is {declared}over the limit of {self._limit()}", file=path)
            return
        except OSError as exc:
            if exc.errno is None:  # raised by a decoder rather than the file system
                self.error(label, f"corrupt image file: {exc}", file=path)
            else:
                self.error(label, f"cannot open image file: {exc.strerror}", file=path)
            return
        except Exception as exc:  # decoders signal corrupt data with assorted exception types
            logger.debug("Reading %s failed", path, exc_info=True)
            self.error(label, f"corrupt image file: {type(exc).__name__}: {exc}", file=path)
            return
        if width * height > self.max_pixels:
            self.error(
                label,
                f"image is {width}x{height} = {width * height / 1e6:.0f} megapixels, over the "
                f"limit of {self._limit()}",
                file=path,
            )
            return
        if self.verify_images and image_format == "JPEG" and not jpeg_has_end_marker(path):
            self.error(
                label, "JPEG data has no end-of-image marker; the file looks truncated", file=path
            )
        if not record.has_size:
            return
        rotation_note = ""
        # The training loader applies EXIF orientation, so the JSON must describe the
        # rotated image.
        if transposed:
            width, height = height, width
            rotation_note = " after EXIF rotation"
        if (width, height) != (record.width, record.height):
            self.error(
                label,
                f"image is {width}x{height} (width x height){rotation_note} on disk "
                f"but the JSON says {record.width}x{record.height}",
                file=path,
            )
