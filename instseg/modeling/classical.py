"""Classical segmentation without training (Otsu threshold, k-means colour clustering,
watershed, Canny edges; OpenCV implements them) as a Detectron2 meta-architecture.

:class:`ClassicalSegmentor` takes and gives what a trained model does: per-class scores
(``sem_seg``) or, with ``MODEL.CLASSICAL.INSTANCES``, ``Instances`` (connected components, or
the watershed's regions), so the same pipeline writes the same outputs and the same evaluators
score it: "classical vs learned" on one dataset with one command each.

Which side is foreground: the one that covers less of the image border, where the background
of most photos is.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import BitMasks, Instances
from torch import nn

from instseg.config import CLASSICAL_METHODS as METHODS


def _border_share(mask: np.ndarray) -> float:
    border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    return float(border.mean())


def _foreground(binary: np.ndarray) -> np.ndarray:
    """``binary`` or its complement: whichever covers less of the border."""
    return ~binary if _border_share(binary) > 0.5 else binary


def otsu(image_bgr: np.ndarray) -> np.ndarray:
    """Foreground (bool H x W) by Otsu's threshold of the blurred grey image."""
    grey = cv2.GaussianBlur(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY), (5, 5), 0)
    _, binary = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return _foreground(binary > 0)


def kmeans(image_bgr: np.ndarray, clusters: int) -> np.ndarray:
    """Class ids (uint8 H x W) of k-means clusters of Lab colours: 0 the cluster covering most
    of the border, then the others by size."""
    lab = cv2.cvtColor(cv2.GaussianBlur(image_bgr, (5, 5), 0), cv2.COLOR_BGR2LAB)
    samples = lab.reshape(-1, 3).astype(np.float32)
    cv2.setRNGSeed(0)  # the same clusters on every run
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 1.0)
    _, labels, _ = cv2.kmeans(samples, clusters, None, criteria, 3, cv2.KMEANS_PP_CENTERS)
    labels = labels.reshape(image_bgr.shape[:2])
    shares = [_border_share(labels == c) for c in range(clusters)]
    background = int(np.argmax(shares))
    sizes = np.bincount(labels.ravel(), minlength=clusters)
    others = sorted((c for c in range(clusters) if c != background), key=lambda c: -sizes[c])
    lut = np.zeros(clusters, dtype=np.uint8)
    for new, c in enumerate(others, start=1):
        lut[c] = new
    return lut[labels]


def watershed(image_bgr: np.ndarray) -> np.ndarray:
    """Region ids (int32 H x W, 0 background) of the watershed of Otsu's foreground, seeded at
    the peaks of its distance transform: touching objects become separate regions."""
    fg = otsu(image_bgr).astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, kernel, iterations=1)
    sure_bg = cv2.dilate(fg, kernel, iterations=2)
    distance = cv2.distanceTransform(fg, cv2.DIST_L2, 5)
    sure_fg = (distance > 0.4 * max(float(distance.max()), 1e-6)).astype(np.uint8)
    _, markers = cv2.connectedComponents(sure_fg)
    markers = markers + 1  # 1: sure background
    markers[(sure_bg > 0) & (sure_fg == 0)] = 0  # unknown: the watershed decides
    markers = cv2.watershed(image_bgr.copy(), markers.astype(np.int32))
    regions = np.where(markers > 1, markers - 1, 0)
    return regions.astype(np.int32)


def canny(image_bgr: np.ndarray) -> np.ndarray:
    """Foreground (bool H x W): the filled outlines of closed Canny edges."""
    grey = cv2.GaussianBlur(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY), (5, 5), 0)
    # Thresholds from the image's own gradients (Canny's L1 magnitude): the strongest 5 %.
    gx, gy = cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)
    high = max(40.0, float(np.percentile(np.abs(gx) + np.abs(gy), 95)))
    edges = cv2.Canny(grey, high / 2, high)
    edges = cv2.morphologyEx(edges, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    contours, _ = cv2.findContours(edges, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(grey)
    cv2.drawContours(filled, contours, -1, 255, thickness=cv2.FILLED)
    return _foreground(filled > 0)


def segment(method: str, image_bgr: np.ndarray, clusters: int = 3) -> np.ndarray:
    """Class ids (H x W) of ``method``: 0 background, 1 foreground (k-means: 1..clusters-1)."""
    if method == "kmeans":
        return kmeans(image_bgr, clusters)
    if method == "watershed":
        return (watershed(image_bgr) > 0).astype(np.uint8)
    return {"otsu": otsu, "canny": canny}[method](image_bgr).astype(np.uint8)


def regions(method: str, image_bgr: np.ndarray, clusters: int, min_area: int) -> list:
    """(class, bool mask) of each object: watershed regions, else connected components of each
    foreground class; smaller than ``min_area`` pixels left out."""
    if method == "watershed":
        labels = watershed(image_bgr)
        found = [(0, labels == r) for r in range(1, int(labels.max()) + 1)]
    else:
        ids = segment(method, image_bgr, clusters)
        found = []
        for c in range(1, int(ids.max()) + 1):
            count, components = cv2.connectedComponents((ids == c).astype(np.uint8))
            found += [(c - 1, components == k) for k in range(1, count)]
    return [(c, m) for c, m in found if int(m.sum()) >= min_area]


def classical_classes(cfg: CfgNode) -> list[str]:
    """The class names of the config's method: background and foreground (k-means: clusters);
    as instances, one class per foreground class."""
    node = cfg.MODEL.CLASSICAL
    if node.METHOD == "kmeans":
        names = [f"cluster {i}" for i in range(1, int(node.CLUSTERS))]
    else:
        names = ["foreground"]
    return names if node.INSTANCES else ["background", *names]


@META_ARCH_REGISTRY.register()
class ClassicalSegmentor(nn.Module):
    """``MODEL.CLASSICAL.METHOD`` on each input image, no parameters to train."""

    @configurable
    def __init__(
        self, *, method: str, clusters: int, instances: bool, min_area: int, input_format: str
    ):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"MODEL.CLASSICAL.METHOD {method!r}: choose one of {METHODS}")
        if method == "kmeans" and clusters < 2:
            raise ValueError("MODEL.CLASSICAL.CLUSTERS: k-means needs at least 2 clusters")
        self.method, self.clusters, self.instances = method, clusters, instances
        self.min_area, self.input_format = min_area, input_format
        self.register_buffer("_device", torch.zeros(0), persistent=False)

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict:
        node = cfg.MODEL.CLASSICAL
        return {
            "method": node.METHOD,
            "clusters": int(node.CLUSTERS),
            "instances": bool(node.INSTANCES),
            "min_area": int(node.MIN_AREA),
            "input_format": cfg.INPUT.FORMAT,
        }

    @property
    def device(self) -> torch.device:
        return self._device.device

    def forward(self, batched_inputs: list[dict]) -> list[dict]:
        if self.training:
            raise RuntimeError("classical methods have nothing to train")
        return [self._one(item) for item in batched_inputs]

    def _one(self, item: dict) -> dict:
        image = item["image"].permute(1, 2, 0).to("cpu", torch.uint8).numpy()
        image = np.ascontiguousarray(image[:, :, ::-1] if self.input_format == "RGB" else image)
        height, width = item.get("height", image.shape[0]), item.get("width", image.shape[1])
        if self.instances:
            return {"instances": self._instances(image, height, width)}
        ids = torch.from_numpy(segment(self.method, image, self.clusters).astype(np.int64))
        num_classes = self.clusters if self.method == "kmeans" else 2
        scores = F.one_hot(ids, num_classes).permute(2, 0, 1).float()[None]
        scores = F.interpolate(scores, size=(height, width), mode="nearest")[0]
        return {"sem_seg": scores.to(self.device)}

    def _instances(self, image: np.ndarray, height: int, width: int) -> Instances:
        found = regions(self.method, image, self.clusters, self.min_area)
        masks = torch.zeros((len(found), height, width), dtype=torch.bool)
        for k, (_, mask) in enumerate(found):
            m = torch.from_numpy(mask)[None, None].float()
            masks[k] = F.interpolate(m, size=(height, width), mode="nearest")[0, 0] > 0
        result = Instances((height, width))
        result.pred_masks = masks
        result.pred_boxes = BitMasks(masks).get_bounding_boxes()
        result.scores = torch.ones(len(found))
        result.pred_classes = torch.tensor([c for c, _ in found], dtype=torch.int64)
        return result
