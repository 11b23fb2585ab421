"""Instance masks of a large image kept as their bounding crops: ``pred_masks`` of tiled inference.

A dense N x H x W mask tensor is what Detectron2's postprocess gives, and what a 4000 x 3000 photo
with a thousand small objects cannot afford (12 GB). :class:`CroppedMasks` holds each mask as
its crop and behaves like that tensor where instseg and Detectron2 read it: ``len``, ``shape``,
indexing along N (so ``Instances`` can hold, filter and sort it), ``masks[i]`` and iteration give
one full H x W mask at a time (so ``instances_to_coco_json`` encodes them with one full mask in
memory), ``masks[i, ys, xs]`` a region, and ``np.asarray`` the dense array for code that needs
all of it (Detectron2's ``Visualizer``).
"""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_util
import torch

Crop = tuple[int, int, np.ndarray]  # x0, y0, bool mask of the crop


class CroppedMasks:
    """N bool masks of a ``height`` x ``width`` image, each stored as ``(x0, y0, crop)``."""

    def __init__(self, crops: list[Crop], height: int, width: int) -> None:
        self.crops = list(crops)
        self.height, self.width = int(height), int(width)

    def __len__(self) -> int:
        return len(self.crops)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.crops), self.height, self.width)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(bool)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def to(self, *args, **kwargs) -> CroppedMasks:
        """CPU only: ``Instances.to`` leaves the masks where they are."""
        return self

    def full(self, index: int) -> np.ndarray:
        """Mask ``index`` at the image's size (H x W bool)."""
        x0, y0, crop = self.crops[index]
        out = np.zeros((self.height, self.width), dtype=bool)
        out[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
        return out

    def region(self, index: int, ys: slice, xs: slice) -> np.ndarray:
        """``full(index)[ys, xs]`` without the full mask."""
        top, bottom, _ = ys.indices(self.height)
        left, right, _ = xs.indices(self.width)
        x0, y0, crop = self.crops[index]
        if (left, top, right, bottom) == (x0, y0, x0 + crop.shape[1], y0 + crop.shape[0]):
            return crop
        out = np.zeros((max(bottom - top, 0), max(right - left, 0)), dtype=bool)
        sy0, sx0 = max(top, y0), max(left, x0)
        sy1, sx1 = min(bottom, y0 + crop.shape[0]), min(right, x0 + crop.shape[1])
        if sy0 < sy1 and sx0 < sx1:
            out[sy0 - top : sy1 - top, sx0 - left : sx1 - left] = crop[
                sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0
            ]
        return out

    def rects(self) -> np.ndarray:
        """Each crop's (x, y, w, h), as ``cv2.boundingRect`` of a tight mask gives it."""
        return np.array(
            [(x0, y0, c.shape[1], c.shape[0]) for x0, y0, c in self.crops], dtype=np.int64
        ).reshape(-1, 4)

    def rle(self, index: int) -> dict:
        """Mask ``index`` as COCO RLE over the full image (``counts`` a str, as
        ``instances_to_coco_json`` writes it), computed from the crop: the runs of its pixels'
        column-major positions in the image."""
        x0, y0, crop = self.crops[index]
        total = self.height * self.width
        cols, rows = np.nonzero(crop.T)  # column by column, top to bottom: COCO's order
        positions = (x0 + cols.astype(np.int64)) * self.height + (y0 + rows)
        if positions.size:
            breaks = np.flatnonzero(np.diff(positions) != 1)
            starts = np.concatenate([positions[:1], positions[breaks + 1]])
            ends = np.concatenate([positions[breaks], positions[-1:]]) + 1
            counts = np.empty(2 * len(starts) + 1, dtype=np.int64)
            counts[0] = starts[0]
            counts[2:-1:2] = starts[1:] - ends[:-1]
            counts[-1] = total - ends[-1]
            counts[1::2] = ends - starts
            if counts[-1] == 0:  # the mask runs to the last pixel: pycocotools ends on its run
                counts = counts[:-1]
        else:
            counts = np.array([total])
        uncompressed = {"counts": counts.tolist(), "size": [self.height, self.width]}
        rle = mask_util.frPyObjects(uncompressed, self.height, self.width)
        rle["counts"] = rle["counts"].decode("utf-8")
        return rle

    def id_image(self) -> np.ndarray:
        """H x W instance ids (1 for the first mask, 0 for background; an earlier mask wins
        where masks overlap), uint8 for up to 255 masks, else uint16."""
        count = len(self.crops)
        if count > np.iinfo(np.uint16).max:
            raise ValueError(f"{count} instances do not fit in a 16-bit id image")
        dtype = np.uint8 if count <= np.iinfo(np.uint8).max else np.uint16
        ids = np.zeros((self.height, self.width), dtype=dtype)
        for index in range(count - 1, -1, -1):
            x0, y0, crop = self.crops[index]
            ids[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]][crop] = index + 1
        return ids

    def __iter__(self):
        for index in range(len(self.crops)):
            yield self.full(index)

    def __getitem__(self, item):
        if isinstance(item, tuple):
            index, ys, xs = item
            return self.region(int(index), ys, xs)
        if isinstance(item, int | np.integer):
            return self.full(int(item))
        if isinstance(item, slice):
            return CroppedMasks(self.crops[item], self.height, self.width)
        picked = torch.as_tensor(np.asarray(item) if isinstance(item, list) else item)
        if picked.dtype == torch.bool:
            picked = torch.nonzero(picked).flatten()
        return CroppedMasks([self.crops[i] for i in picked.tolist()], self.height, self.width)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        dense = np.zeros(self.shape, dtype=bool)
        for index, (x0, y0, crop) in enumerate(self.crops):
            dense[index, y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
        return dense if dtype is None else dense.astype(dtype)

    def dense(self) -> torch.Tensor:
        """The N x H x W bool tensor (all of it in memory)."""
        return torch.from_numpy(np.asarray(self))
