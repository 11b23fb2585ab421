"""Tiled inference (``INSTSEG.PREDICT.TILES``): the windows an image is cut into.

Mask R-CNN resizes every input to ``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``, so on a large
photo a small object shrinks below what the model can find. With tiling on, each image larger
than ``SIZE`` is cut into overlapping ``SIZE`` x ``SIZE`` windows, each predicted at model
resolution (and, with ``FULL_IMAGE``, the whole image too, for objects larger than a tile); the
pipeline batches the windows through the model and :mod:`instseg.inference.tile_merge` maps
their instances back and merges them into one set per image.

The grid is the one of SAHI's ``get_slice_bboxes``: windows step by ``SIZE`` less the
overlap, and the last row and column are moved back to end at the image's edge, so every
window has the full size (and tiles share one resized shape, so they batch together).
"""

from __future__ import annotations

from dataclasses import dataclass

from detectron2.config import CfgNode

from instseg.config import ConfigError

Window = tuple[int, int, int, int]  # x0, y0, x1, y1 in image pixels, end exclusive

# Least tile side: below it the model's anchors (and the sample config's 16 px ones) see
# little context around an object.
MIN_TILE_SIZE = 64


@dataclass(frozen=True)
class TileOptions:
    """``INSTSEG.PREDICT.TILES``, checked."""

    size: int = 0  # tile side in pixels; 0: tiling off
    overlap: float = 0.2
    full_image: bool = True
    match_ios: float = 0.5

    @property
    def enabled(self) -> bool:
        return self.size > 0

    @classmethod
    def from_cfg(cls, cfg: CfgNode) -> TileOptions:
        tiles = cfg.INSTSEG.PREDICT.TILES
        size, overlap, match_ios = int(tiles.SIZE), float(tiles.OVERLAP), float(tiles.MATCH_IOS)
        if size != 0 and size < MIN_TILE_SIZE:
            raise ConfigError(
                f"INSTSEG.PREDICT.TILES.SIZE must be 0 (no tiling) or >= {MIN_TILE_SIZE}, "
                f"got {size}"
            )
        if not 0.0 <= overlap < 1.0:
            raise ConfigError(f"INSTSEG.PREDICT.TILES.OVERLAP must be in [0, 1), got {overlap}")
        if not 0.0 < match_ios <= 1.0:
            raise ConfigError(f"INSTSEG.PREDICT.TILES.MATCH_IOS must be in (0, 1], got {match_ios}")
        return cls(size, overlap, bool(tiles.FULL_IMAGE), match_ios)

    def windows(self, height: int, width: int) -> list[Window]:
        """The windows an ``height`` x ``width`` image is predicted in: the tiles, row by row,
        then the whole image with ``full_image``; only the whole image when it fits one tile."""
        whole = (0, 0, width, height)
        if not self.enabled or (height <= self.size and width <= self.size):
            return [whole]
        xs = _starts(width, self.size, self.overlap)
        ys = _starts(height, self.size, self.overlap)
        tiles = [
            (x, y, min(x + self.size, width), min(y + self.size, height)) for y in ys for x in xs
        ]
        return [*tiles, whole] if self.full_image else tiles


def _starts(length: int, size: int, overlap: float) -> list[int]:
    """Window starts along one side: every ``size - overlap`` pixels, the last moved back so
    that its window ends at the edge (one window when the side fits in one)."""
    if length <= size:
        return [0]
    step = max(1, size - int(size * overlap))
    starts = list(range(0, length - size, step))
    starts.append(length - size)
    return starts
