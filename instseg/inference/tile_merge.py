"""One set of instances per image from the instances of its overlapping windows (tiled inference).

Each window's instances come back at the window's size (Detectron2's postprocess pastes masks to
it); :meth:`TileMerger.add` moves them to image coordinates and crops each mask to its own extent
at once, so an image's pieces take memory in proportion to its objects, not to windows x image
size; the merged masks stay cropped (:class:`~instseg.structures.cropped_masks.CroppedMasks`)
through every output.

Two pieces of one class from different windows are one object when their masks agree where both
windows see: within the windows' intersection, the masks' intersection is at least ``MATCH_IOS``
of the smaller one (IoS, not IoU: a tile that sees only a sliver of an object predicts a sliver a
pixel or two off, whose IoU with the neighbour's whole view is low). An object cut by a tile
border is seen whole or in part by each tile covering it, and the parts agree on the pixels both
tiles see; a duplicate from the overlap or from the full-image pass agrees everywhere. Matches
are grouped transitively (an object over three tiles is one group), and a group becomes one
instance whose every pixel is decided by the best piece whose window sees it: a piece its window
sees whole before one cut by its window's border, then a tile's before the coarser full-image
pass's, then the better score. So a small object's mask is the one of the tile that holds it
whole, a large one's comes from the full-image pass, and an object no window holds whole is
pieced together from its parts. Box NMS, SAHI's default (greedy NMM by box IoS), keeps both
halves of an object cut across a border whenever neither half's box covers the other.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from detectron2.structures import Boxes, Instances

from instseg.inference.tiles import Window
from instseg.structures.cropped_masks import CroppedMasks


@dataclass
class _Piece:
    """One window's instance in image coordinates; ``mask`` covers ``extent`` only."""

    window: int
    score: float
    label: int
    box: np.ndarray  # x0, y0, x1, y1 (float, image coordinates)
    extent: Window  # the mask's (or, without one, the box's) pixel extent
    mask: np.ndarray | None  # bool, extent-sized; None for a model without masks


def _intersect(a: Window, b: Window) -> Window | None:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    return (x0, y0, x1, y1) if x0 < x1 and y0 < y1 else None


def _region(piece: _Piece, area: Window) -> np.ndarray:
    """The piece's mask (its box, without one) over ``area``, zeros outside its extent."""
    out = np.zeros((area[3] - area[1], area[2] - area[0]), dtype=bool)
    inner = _intersect(piece.extent, area)
    if inner is None:
        return out
    target = out[inner[1] - area[1] : inner[3] - area[1], inner[0] - area[0] : inner[2] - area[0]]
    if piece.mask is None:
        target[:] = True
    else:
        ex, ey = piece.extent[:2]
        target[:] = piece.mask[inner[1] - ey : inner[3] - ey, inner[0] - ex : inner[2] - ex]
    return out


class TileMerger:
    """Collects one image's window predictions (:meth:`add`), then merges them (:meth:`result`)."""

    def __init__(self, windows: list[Window], height: int, width: int, match_ios: float) -> None:
        self.windows = windows
        self.height, self.width = height, width
        self.match_ios = match_ios
        self.pieces: list[_Piece] = []
        self.has_masks = False

    def add(self, window_index: int, instances: Instances) -> None:
        """Window ``window_index``'s instances (CPU, at the window's size), cropped at once."""
        x0, y0 = self.windows[window_index][:2]
        boxes = instances.pred_boxes.tensor.numpy().astype(np.float64) + (x0, y0, x0, y0)
        scores = instances.scores.tolist()
        labels = instances.pred_classes.tolist()
        masks = instances.pred_masks.numpy() if instances.has("pred_masks") else None
        self.has_masks |= masks is not None
        for i, box in enumerate(boxes):
            mask = None
            if masks is not None:
                rows, cols = np.flatnonzero(masks[i].any(axis=1)), np.flatnonzero(masks[i].any(0))
                if not rows.size:
                    continue  # an empty mask: nothing to draw, encode or match
                mask = masks[i, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].copy()
                extent = (x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1)
            else:
                left, top = np.floor(box[:2]).astype(int)
                right, bottom = np.ceil(box[2:]).astype(int)
                extent = (left, top, max(right, left + 1), max(bottom, top + 1))
            extent = tuple(int(v) for v in extent)
            self.pieces.append(_Piece(window_index, scores[i], labels[i], box, extent, mask))

    def result(self) -> Instances:
        """The merged instances at the image's size, by descending score; ``pred_masks`` is a
        :class:`~instseg.structures.cropped_masks.CroppedMasks`."""
        groups = self._groups()
        merged = [self._merge([self.pieces[i] for i in group]) for group in groups]
        merged.sort(key=lambda piece: -piece.score)
        out = Instances((self.height, self.width))
        boxes = np.array([p.box for p in merged]).reshape(-1, 4)
        out.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        out.scores = torch.tensor([p.score for p in merged], dtype=torch.float32)
        out.pred_classes = torch.tensor([p.label for p in merged], dtype=torch.int64)
        if self.has_masks:
            crops = [(p.extent[0], p.extent[1], p.mask) for p in merged]
            out.pred_masks = CroppedMasks(crops, self.height, self.width)
        return out

    # -- matching

    def _groups(self) -> list[list[int]]:
        """Pieces grouped by matches (union-find over matching pairs), in first-piece order."""
        parent = list(range(len(self.pieces)))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        by_window: dict[int, list[int]] = {}
        for i, piece in enumerate(self.pieces):
            by_window.setdefault(piece.window, []).append(i)
        extents = np.array([p.extent for p in self.pieces], dtype=np.int64).reshape(-1, 4)
        labels = np.array([p.label for p in self.pieces], dtype=np.int64)
        boxes = np.array(self.windows, dtype=np.int64).reshape(-1, 4)
        windows = sorted(by_window)
        for a_index, a in enumerate(windows):
            # The later windows that overlap window a, found in one array expression.
            later = np.array(windows[a_index + 1 :], dtype=np.int64)
            if not later.size:
                break
            wa, wb = boxes[a], boxes[later]
            overlapping = later[
                (np.maximum(wa[0], wb[:, 0]) < np.minimum(wa[2], wb[:, 2]))
                & (np.maximum(wa[1], wb[:, 1]) < np.minimum(wa[3], wb[:, 3]))
            ]
            left = np.array(by_window[a])
            for b in overlapping.tolist():
                shared = _intersect(self.windows[a], self.windows[b])
                right = np.array(by_window[b])
                for i, j in self._candidates(left, right, extents, labels, shared):
                    if root(i) != root(j) and self._match(i, j, shared):
                        parent[root(j)] = root(i)
        groups: dict[int, list[int]] = {}
        for i in range(len(self.pieces)):
            groups.setdefault(root(i), []).append(i)
        return list(groups.values())

    @staticmethod
    def _candidates(left, right, extents, labels, shared: Window):
        """Pairs (i from ``left``, j from ``right``) of one class whose extents meet inside
        ``shared``: the only pairs worth comparing masks for."""
        lo, hi = np.asarray(shared[:2]), np.asarray(shared[2:])
        a = extents[left]
        b = extents[right]
        a_lo, a_hi = np.maximum(a[:, :2], lo), np.minimum(a[:, 2:], hi)
        b_lo, b_hi = np.maximum(b[:, :2], lo), np.minimum(b[:, 2:], hi)
        a_in = np.all(a_lo < a_hi, axis=1)
        b_in = np.all(b_lo < b_hi, axis=1)
        left, a_lo, a_hi = left[a_in], a_lo[a_in], a_hi[a_in]
        right, b_lo, b_hi = right[b_in], b_lo[b_in], b_hi[b_in]
        if not left.size or not right.size:
            return []
        meet = np.all(
            np.maximum(a_lo[:, None], b_lo[None]) < np.minimum(a_hi[:, None], b_hi[None]), axis=2
        )
        meet &= labels[left][:, None] == labels[right][None]
        rows, cols = np.nonzero(meet)
        return zip(left[rows].tolist(), right[cols].tolist(), strict=True)

    def _match(self, i: int, j: int, shared: Window) -> bool:
        """Whether pieces ``i`` and ``j`` are one object: same class, and within the area both
        their windows see, the masks' intersection at least ``match_ios`` of the smaller."""
        p, q = self.pieces[i], self.pieces[j]
        if p.label != q.label:
            return False
        p_area, q_area = _intersect(p.extent, shared), _intersect(q.extent, shared)
        if p_area is None or q_area is None or _intersect(p_area, q_area) is None:
            return False
        both = (
            min(p_area[0], q_area[0]),
            min(p_area[1], q_area[1]),
            max(p_area[2], q_area[2]),
            max(p_area[3], q_area[3]),
        )
        pm, qm = _region(p, both), _region(q, both)
        smaller = min(np.count_nonzero(pm), np.count_nonzero(qm))
        return smaller > 0 and np.count_nonzero(pm & qm) >= self.match_ios * smaller

    def _cut(self, piece: _Piece) -> bool:
        """Whether the piece touches a border of its window inside the image (is seen in part)."""
        x0, y0, x1, y1 = self.windows[piece.window]
        ex0, ey0, ex1, ey1 = piece.extent
        return (
            (ex0 <= x0 and x0 > 0)
            or (ey0 <= y0 and y0 > 0)
            or (ex1 >= x1 and x1 < self.width)
            or (ey1 >= y1 and y1 < self.height)
        )

    def _merge(self, group: list[_Piece]) -> _Piece:
        """One instance from a group: each pixel from the best piece whose window sees it (whole
        before cut, then a tile before the coarser full-image pass, then by score); the group's
        best score and its best piece's class."""
        if len(group) == 1:
            return group[0]
        whole_image = (0, 0, self.width, self.height)
        group = sorted(
            group, key=lambda p: (self._cut(p), self.windows[p.window] == whole_image, -p.score)
        )
        best = dataclasses.replace(group[0], score=max(p.score for p in group))
        extent = (
            min(p.extent[0] for p in group),
            min(p.extent[1] for p in group),
            max(p.extent[2] for p in group),
            max(p.extent[3] for p in group),
        )
        if not self.has_masks:
            return _Piece(
                best.window, best.score, best.label, np.array(extent, float), extent, None
            )
        height, width = extent[3] - extent[1], extent[2] - extent[0]
        mask = np.zeros((height, width), dtype=bool)
        decided = np.zeros((height, width), dtype=bool)
        for piece in group:
            seen = _intersect(self.windows[piece.window], extent)
            if seen is None:
                continue
            sees = np.zeros((height, width), dtype=bool)
            sees[
                seen[1] - extent[1] : seen[3] - extent[1], seen[0] - extent[0] : seen[2] - extent[0]
            ] = True
            todo = sees & ~decided
            mask[todo] = _region(piece, extent)[todo]
            decided |= sees
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if not rows.size:
            return best
        tight = (
            extent[0] + int(cols[0]),
            extent[1] + int(rows[0]),
            extent[0] + int(cols[-1]) + 1,
            extent[1] + int(rows[-1]) + 1,
        )
        crop = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        return _Piece(best.window, best.score, best.label, np.array(tight, float), tight, crop)
