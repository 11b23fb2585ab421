"""The demo report: figures (image grids, original / predicted mask / overlay panels) and the
``report.md`` + ``report.html`` pages that link every artifact of a run by relative path."""

import html
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from instseg.io.atomic import atomic_path, atomic_write_text

logger = logging.getLogger(__name__)

PANEL_TITLES = ("original", "predicted masks", "overlay")


def colorize_instance_ids(instance_ids: np.ndarray) -> np.ndarray:
    """instance_ids (np.ndarray): H x W integer map, 0 = background, k = k-th instance.
    Returns an H x W x 3 uint8 BGR image with one fixed colour per id and black background."""
    rng = np.random.default_rng(0)
    palette = rng.integers(64, 256, size=(int(instance_ids.max()) + 1, 3), dtype=np.uint8)
    palette[0] = 0
    return palette[instance_ids]


def _titled(image: np.ndarray, title: str) -> np.ndarray:
    bar = np.full((22, image.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, title, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([bar, image])


def draw_three_panel(
    original_bgr: np.ndarray, instance_ids: np.ndarray, overlay_bgr: np.ndarray
) -> np.ndarray:
    """Side by side: the input image, its predicted instance masks, the annotated overlay.
    All inputs share H x W; images are BGR uint8."""
    return side_by_side([original_bgr, colorize_instance_ids(instance_ids), overlay_bgr])


def side_by_side(panels: Sequence[np.ndarray], titles: Sequence[str] = PANEL_TITLES) -> np.ndarray:
    """Same-height BGR images in a row, each under its title, white gaps between them."""
    gap = np.full((panels[0].shape[0] + 22, 6, 3), 255, np.uint8)
    titled = [_titled(p, t) for p, t in zip(panels, titles, strict=True)]
    row = [titled[0]]
    for panel in titled[1:]:
        row += [gap, panel]
    return np.hstack(row)


def make_grid(images: Sequence[np.ndarray], columns: int = 4, cell: int = 256) -> np.ndarray:
    """Tile BGR images into a grid of ``cell``-pixel squares (aspect kept, white padding)."""
    tiles = []
    for image in images:
        scale = cell / max(image.shape[:2])
        resized = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        tile = np.full((cell, cell, 3), 255, np.uint8)
        tile[: resized.shape[0], : resized.shape[1]] = resized
        tiles.append(tile)
    while len(tiles) % columns:
        tiles.append(np.full((cell, cell, 3), 255, np.uint8))
    rows = [np.hstack(tiles[i : i + columns]) for i in range(0, len(tiles), columns)]
    return np.vstack(rows)


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp.with_suffix(".png")), image):
            raise OSError(f"{path}: could not encode PNG")
        tmp.with_suffix(".png").replace(tmp)
    return Path(path)


@dataclass
class ReportSection:
    title: str
    text: str = ""  # Markdown-ish plain text: paragraphs; a line starting with "|" is a table row
    images: list[Path] = field(default_factory=list)
    links: list[tuple[str, Path]] = field(default_factory=list)


def _relative(path: Path, root: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), root.resolve())).as_posix()


def _markdown(title: str, sections: Sequence[ReportSection], root: Path) -> str:
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        if section.text:
            lines += [section.text.rstrip(), ""]
        for image in section.images:
            lines += [f"![{image.stem}]({_relative(image, root)})", ""]
        for label, target in section.links:
            lines.append(f"- [{label}]({_relative(target, root)})")
        if section.links:
            lines.append("")
    return "\n".join(lines)


def _html_text(text: str) -> str:
    """Paragraphs and pipe tables (as the AP tables are printed) to HTML."""
    out, table = [], []

    def flush_table():
        if table:
            rows = [r.strip().strip("|").split("|") for r in table if not set(r) <= set("|-: ")]
            cells = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in row) + "</tr>"
                for row in rows
            )
            out.append(f"<table>{cells}</table>")
            table.clear()

    for line in text.splitlines():
        if line.lstrip().startswith("|"):
            table.append(line)
            continue
        flush_table()
        if line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    flush_table()
    return "\n".join(out)


def _html(title: str, sections: Sequence[ReportSection], root: Path) -> str:
    body = [f"<h1>{html.escape(title)}</h1>"]
    for section in sections:
        body.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.text:
            body.append(_html_text(section.text))
        for image in section.images:
            src = html.escape(_relative(image, root))
            body.append(f'<p><img src="{src}" alt="{html.escape(image.stem)}"></p>')
        if section.links:
            items = "".join(
                f'<li><a href="{html.escape(_relative(t, root))}">{html.escape(label)}</a></li>'
                for label, t in section.links
            )
            body.append(f"<ul>{items}</ul>")
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
        "img{max-width:100%}table{border-collapse:collapse}"
        "td{border:1px solid #ccc;padding:2px 8px;text-align:right}"
    )
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_report(root: str | os.PathLike, title: str, sections: Sequence[ReportSection]):
    """Write ``root/report.md`` and ``root/report.html``; returns both paths."""
    root = Path(root)
    md = atomic_write_text(root / "report.md", _markdown(title, sections, root))
    page = atomic_write_text(root / "report.html", _html(title, sections, root))
    return md, page
