"""Tests for COCO dataset validation and statistics on a tiny on-disk dataset."""

import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest
from conftest import png_declaring
from PIL import Image

from instseg.data.stats import format_dataset_stats, load_dataset_stats
from instseg.data.validate import ERROR, WARNING, Problem, has_errors, validate_coco_dataset

SMALL_W, SMALL_H = 64, 48
LARGE_W, LARGE_H = 128, 96
EXIF_ORIENTATION_TAG = 0x0112


def _pixels(width: int, height: int) -> np.ndarray:
    """Textured pixels, so a JPEG has real entropy-coded data to truncate."""
    rng = np.random.default_rng(width * height)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _write_image(path: Path, width: int, height: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), _pixels(width, height))


def _rectangle(x0: int, y0: int, x1: int, y1: int) -> list[int]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def _block_mask(width: int, height: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def _compressed_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """Column-major run lengths starting with a background run, as COCO crowd masks store them."""
    flat = mask.flatten(order="F")
    boundaries = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    runs = np.diff(boundaries).tolist()
    if flat[0] == 1:
        runs = [0, *runs]
    return {"size": list(mask.shape), "counts": runs}


class DatasetFiles:
    """A clean COCO dataset on disk that a test mutates before writing the JSON."""

    def __init__(self, root: Path):
        self.image_root = root / "images"
        self.json_path = root / "annotations.json"
        self.raw_json: str | None = None  # written instead of the dataset when set
        self.skip_json = False
        _write_image(self.image_root / "a.png", SMALL_W, SMALL_H)
        _write_image(self.image_root / "b.jpg", SMALL_W, SMALL_H)
        _write_image(self.image_root / "nested" / "c.png", LARGE_W, LARGE_H)
        self.coco = {
            "images": [
                {"id": 1, "file_name": "a.png", "width": SMALL_W, "height": SMALL_H},
                {"id": 2, "file_name": "b.jpg", "width": SMALL_W, "height": SMALL_H},
                {"id": 3, "file_name": "nested/c.png", "width": LARGE_W, "height": LARGE_H},
            ],
            # Non-contiguous ids are valid COCO.
            "categories": [
                {"id": 1, "name": "cat"},
                {"id": 5, "name": "dog"},
                {"id": 9, "name": "bird"},
            ],
            "annotations": [
                # 10x10 square polygon, area 100: small.
                _annotation(1, 1, 1, [2, 2, 10, 10], [_rectangle(2, 2, 12, 12)]),
                # 40x40 block as compressed RLE, area 1600: medium.
                _annotation(
                    2,
                    1,
                    5,
                    [20, 4, 40, 40],
                    _compressed_rle(_block_mask(SMALL_W, SMALL_H, 20, 4, 60, 44)),
                ),
                # Right triangle with legs 60 and 40, stored area 1200: medium.
                {
                    **_annotation(3, 2, 1, [0, 0, 60, 40], [[0, 0, 60, 0, 0, 40]]),
                    "area": 1200,
                },
                # 120x88 rectangle polygon, area 10560: large.
                _annotation(4, 3, 9, [4, 4, 120, 88], [_rectangle(4, 4, 124, 92)]),
                # Crowd region as RLE, 20x20, area 400: small.
                {
                    **_annotation(
                        7,
                        3,
                        1,
                        [100, 60, 20, 20],
                        _uncompressed_rle(_block_mask(LARGE_W, LARGE_H, 100, 60, 120, 80)),
                    ),
                    "iscrowd": 1,
                },
                # 50x50 block as uncompressed RLE, area 2500: medium.
                _annotation(
                    8,
                    3,
                    5,
                    [10, 10, 50, 50],
                    _uncompressed_rle(_block_mask(LARGE_W, LARGE_H, 10, 10, 60, 60)),
                ),
            ],
        }

    def image(self, image_id: int) -> dict:
        return next(image for image in self.coco["images"] if image["id"] == image_id)

    def annotation(self, annotation_id: int) -> dict:
        return next(ann for ann in self.coco["annotations"] if ann["id"] == annotation_id)

    def category(self, category_id: int) -> dict:
        return next(cat for cat in self.coco["categories"] if cat["id"] == category_id)

    def write(self) -> None:
        if self.skip_json:
            return
        text = self.raw_json if self.raw_json is not None else json.dumps(self.coco)
        self.json_path.write_text(text, encoding="utf-8")

    def forget_json(self) -> None:
        """Point at a JSON file that is never written."""
        self.json_path = self.json_path.with_name("missing.json")
        self.skip_json = True

    def validate(self, check_images: bool = True) -> list[Problem]:
        self.write()
        return validate_coco_dataset(self.json_path, self.image_root, check_images=check_images)

    def expand(self, line: str) -> str:
        outside = self.image_root.parent / "outside.png"
        line = line.replace("{json}", str(self.json_path)).replace("{root}", str(self.image_root))
        return line.replace("{outside}", str(outside))


def _symlink_outside(d: DatasetFiles) -> None:
    outside = d.image_root.parent / "outside.png"
    (d.image_root / "a.png").rename(outside)
    (d.image_root / "a.png").symlink_to(outside)


def _annotation(annotation_id, image_id, category_id, bbox, segmentation) -> dict:
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": bbox,
        "segmentation": segmentation,
        "iscrowd": 0,
    }


@pytest.fixture
def dataset(tmp_path: Path) -> DatasetFiles:
    return DatasetFiles(tmp_path)


def _reported(problems: list[Problem]) -> list[tuple[str, str]]:
    return [(problem.severity, str(problem)) for problem in problems]


def test_clean_dataset_has_no_problems(dataset):
    assert dataset.validate() == []


# Mutations that keep the dataset valid.


def _box_within_tolerance(d: DatasetFiles) -> None:
    d.annotation(2)["bbox"] = [24.5, -0.5, 40, 40]  # right edge at 64.5, top at -0.5


def _exif_rotated_image_matching_json(d: DatasetFiles) -> None:
    # Stored as 48x64 but rotated 90 degrees on load, so it is 64x48 as the JSON says.
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = 6
    path = d.image_root / "b.jpg"
    Image.fromarray(_pixels(SMALL_H, SMALL_W)).save(path, exif=exif)


def _nested_file_name_with_dot_segments(d: DatasetFiles) -> None:
    d.image(3)["file_name"] = "nested/../nested/./c.png"


@pytest.mark.parametrize(
    "mutate",
    [
        _box_within_tolerance,
        _exif_rotated_image_matching_json,
        _nested_file_name_with_dot_segments,
    ],
)
def test_valid_variants_have_no_problems(dataset, mutate):
    mutate(dataset)
    assert dataset.validate() == []


# Each case mutates the clean dataset one way; expected lines use {json} and {root}.


def _set_raw_json(text: str) -> Callable[[DatasetFiles], None]:
    def mutate(d: DatasetFiles) -> None:
        d.raw_json = text

    return mutate


def _truncate_jpeg(d: DatasetFiles) -> None:
    path = d.image_root / "b.jpg"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 3 // 4])


def _exif_rotation_breaks_size(d: DatasetFiles) -> None:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = 6
    Image.fromarray(_pixels(SMALL_W, SMALL_H)).save(d.image_root / "b.jpg", exif=exif)


def _rle_of_narrower_mask(d: DatasetFiles) -> None:
    d.annotation(2)["segmentation"] = _compressed_rle(_block_mask(60, SMALL_H, 20, 4, 60, 44))


def _uncompressed_counts(d: DatasetFiles) -> list:
    return d.annotation(8)["segmentation"]["counts"]


MALFORMED_CASES = {
    "invalid_json": (
        _set_raw_json('{"images": [}'),
        [(ERROR, "{json}: line 1, column 13: invalid JSON: Expecting value")],
    ),
    "top_level_not_object": (
        lambda d: setattr(d, "coco", [1, 2]),
        [(ERROR, "{json}: <top level>: must be a JSON object, got array [1, 2]")],
    ),
    "json_file_missing": (
        DatasetFiles.forget_json,
        [(ERROR, "{json}: <file>: cannot read file: No such file or directory")],
    ),
    "missing_top_level_key": (
        lambda d: d.coco.pop("annotations"),
        [(ERROR, "{json}: <top level>: missing required key 'annotations'")],
    ),
    "section_wrong_type": (
        lambda d: d.coco.update(images={"id": 1}),
        [(ERROR, "{json}: images: must be an array, got object")],
    ),
    "duplicate_image_id": (
        lambda d: d.image(2).update(id=1),
        [
            (ERROR, "{json}: images[1] (id=1): duplicate image id 1 (first used by images[0])"),
            (ERROR, "{json}: annotations[2] (id=3).image_id: refers to unknown image id 2"),
        ],
    ),
    "duplicate_annotation_id": (
        lambda d: d.annotation(7).update(id=1),
        [
            (
                ERROR,
                "{json}: annotations[4] (id=1): duplicate annotation id 1 "
                "(first used by annotations[0])",
            )
        ],
    ),
    "duplicate_category_id": (
        lambda d: d.category(9).update(id=5),
        [
            (
                ERROR,
                "{json}: categories[2] (id=5): duplicate category id 5 (first used by categories[1])",
            ),
            (ERROR, "{json}: annotations[3] (id=4).category_id: refers to unknown category id 9"),
        ],
    ),
    "unknown_image_id": (
        lambda d: d.annotation(1).update(image_id=99),
        [(ERROR, "{json}: annotations[0] (id=1).image_id: refers to unknown image id 99")],
    ),
    "unknown_category_id": (
        lambda d: d.annotation(2).update(category_id=2),
        [(ERROR, "{json}: annotations[1] (id=2).category_id: refers to unknown category id 2")],
    ),
    "image_missing_width": (
        lambda d: d.image(1).pop("width"),
        [(ERROR, "{json}: images[0] (id=1): missing required field 'width'")],
    ),
    "image_id_not_integer": (
        lambda d: d.image(3).update(id="3"),
        [
            (ERROR, '{json}: images[2].id: must be an integer, got string "3"'),
            (ERROR, "{json}: annotations[3] (id=4).image_id: refers to unknown image id 3"),
            (ERROR, "{json}: annotations[4] (id=7).image_id: refers to unknown image id 3"),
            (ERROR, "{json}: annotations[5] (id=8).image_id: refers to unknown image id 3"),
        ],
    ),
    "annotation_missing_bbox": (
        lambda d: d.annotation(4).pop("bbox"),
        [(ERROR, "{json}: annotations[3] (id=4): missing required field 'bbox'")],
    ),
    "polygon_two_points": (
        lambda d: d.annotation(1).update(segmentation=[[2, 2, 12, 2]]),
        [
            (
                ERROR,
                "{json}: annotations[0] (id=1).segmentation[0]: polygon has 2 points; "
                "needs at least 3",
            )
        ],
    ),
    "polygon_odd_coordinate_count": (
        lambda d: d.annotation(4)["segmentation"][0].append(50),
        [
            (
                ERROR,
                "{json}: annotations[3] (id=4).segmentation[0]: polygon has an odd number "
                "of coordinates (9)",
            )
        ],
    ),
    "polygon_non_numeric_coordinate": (
        lambda d: d.annotation(4)["segmentation"][0].__setitem__(3, "60"),
        [
            (
                ERROR,
                '{json}: annotations[3] (id=4).segmentation[0][3]: must be a finite number, got string "60"',
            )
        ],
    ),
    "polygon_point_outside_image": (
        lambda d: d.annotation(4)["segmentation"][0].__setitem__(2, 130),
        [
            (
                WARNING,
                "{json}: annotations[3] (id=4).segmentation[0]: warning: point (130, 4) lies "
                "outside the 128x96 image",
            )
        ],
    ),
    "annotation_not_object": (
        lambda d: d.coco["annotations"].append(5),
        [(ERROR, "{json}: annotations[6]: must be an object, got number 5")],
    ),
    "segmentation_wrong_type": (
        lambda d: d.annotation(1).update(segmentation="polygon"),
        [
            (
                ERROR,
                "{json}: annotations[0] (id=1).segmentation: must be a list of polygons or an "
                'RLE object, got string "polygon"',
            )
        ],
    ),
    "rle_size_differs_from_image": (
        _rle_of_narrower_mask,
        [
            (
                ERROR,
                "{json}: annotations[1] (id=2).segmentation.size: RLE size [48, 60] differs "
                "from the image's [height, width] [48, 64]",
            )
        ],
    ),
    "rle_compressed_invalid_character": (
        lambda d: d.annotation(2)["segmentation"].update(
            counts="~" + d.annotation(2)["segmentation"]["counts"]
        ),
        [
            (
                ERROR,
                "{json}: annotations[1] (id=2).segmentation.counts: malformed compressed RLE: "
                "invalid character '~' at offset 0",
            )
        ],
    ),
    "rle_negative_run": (
        lambda d: _uncompressed_counts(d).__setitem__(1, -5),
        [
            (
                ERROR,
                "{json}: annotations[5] (id=8).segmentation.counts[1]: must be a non-negative "
                "integer, got number -5",
            )
        ],
    ),
    "rle_runs_do_not_cover_image": (
        lambda d: _uncompressed_counts(d).__setitem__(-1, _uncompressed_counts(d)[-1] + 10),
        [
            (
                ERROR,
                "{json}: annotations[5] (id=8).segmentation.counts: run lengths cover "
                f"{LARGE_W * LARGE_H + 10} pixels but size [96, 128] has {LARGE_W * LARGE_H}",
            )
        ],
    ),
    "rle_missing_size": (
        lambda d: d.annotation(2)["segmentation"].pop("size"),
        [(ERROR, "{json}: annotations[1] (id=2).segmentation: RLE is missing 'size'")],
    ),
    "bbox_zero_width": (
        lambda d: d.annotation(1).update(bbox=[2, 2, 0, 10]),
        [(ERROR, "{json}: annotations[0] (id=1).bbox: non-positive size: width 0, height 10")],
    ),
    "bbox_outside_image": (
        lambda d: d.annotation(2).update(bbox=[30, 4, 40, 40]),
        [
            (
                ERROR,
                "{json}: annotations[1] (id=2).bbox: box [30, 4, 40, 40] extends outside "
                "the 64x48 image",
            )
        ],
    ),
    "bbox_wrong_length": (
        lambda d: d.annotation(1).update(bbox=[2, 2, 10]),
        [
            (
                ERROR,
                "{json}: annotations[0] (id=1).bbox: must be [x, y, width, height] with 4 "
                "finite numbers, got array [2, 2, 10]",
            )
        ],
    ),
    "image_missing_on_disk": (
        lambda d: (d.image_root / "a.png").unlink(),
        [(ERROR, "{root}/a.png: images[0] (id=1): image file not found")],
    ),
    "image_declares_too_many_pixels": (
        lambda d: (d.image_root / "a.png").write_bytes(png_declaring(12000, 10000)),
        [
            (
                ERROR,
                "{root}/a.png: images[0] (id=1): image is 12000x10000 = 120 megapixels, over the "
                "limit of 100 megapixels (INSTSEG.MAX_IMAGE_PIXELS)",
            )
        ],
    ),
    "image_past_pil_limit": (
        lambda d: (d.image_root / "a.png").write_bytes(png_declaring(20000, 20000)),
        [
            (
                ERROR,
                "{root}/a.png: images[0] (id=1): image is 400 megapixels, over the limit of 100 "
                "megapixels (INSTSEG.MAX_IMAGE_PIXELS)",
            )
        ],
    ),
    "file_name_symlink_leaves_root": (
        _symlink_outside,
        [
            (
                ERROR,
                "{root}/a.png: images[0] (id=1).file_name: 'a.png' is a symbolic link leading "
                "outside the image root (to {outside}); training never reads outside it",
            )
        ],
    ),
    "image_not_an_image": (
        lambda d: (d.image_root / "nested" / "c.png").write_bytes(b"not an image at all"),
        [(ERROR, "{root}/nested/c.png: images[2] (id=3): not a recognizable image file")],
    ),
    "jpeg_truncated": (
        _truncate_jpeg,
        [
            (
                ERROR,
                "{root}/b.jpg: images[1] (id=2): JPEG data has no end-of-image marker; "
                "the file looks truncated",
            )
        ],
    ),
    "image_size_differs_on_disk": (
        lambda d: _write_image(d.image_root / "a.png", 60, SMALL_H),
        [
            (
                ERROR,
                "{root}/a.png: images[0] (id=1): image is 60x48 (width x height) on disk "
                "but the JSON says 64x48",
            )
        ],
    ),
    "exif_rotation_changes_size": (
        _exif_rotation_breaks_size,
        [
            (
                ERROR,
                "{root}/b.jpg: images[1] (id=2): image is 48x64 (width x height) after EXIF "
                "rotation on disk but the JSON says 64x48",
            )
        ],
    ),
    "file_name_absolute": (
        lambda d: d.image(1).update(file_name="/data/a.png"),
        [
            (
                ERROR,
                "{json}: images[0] (id=1).file_name: absolute path '/data/a.png'; file_name "
                "must be relative to the image root",
            )
        ],
    ),
    "file_name_escapes_root": (
        lambda d: d.image(3).update(file_name="nested/../../c.png"),
        [
            (
                ERROR,
                "{json}: images[2] (id=3).file_name: path 'nested/../../c.png' escapes the "
                "image root",
            )
        ],
    ),
    "image_root_missing": (
        lambda d: setattr(d, "image_root", d.image_root.with_name("missing")),
        [(ERROR, "{root}: <image root>: image root directory not found")],
    ),
    "category_without_name": (
        lambda d: d.category(5).pop("name"),
        [(ERROR, "{json}: categories[1] (id=5): category has no name")],
    ),
    "image_without_annotations": (
        lambda d: d.coco["annotations"].remove(d.annotation(3)),
        [(WARNING, "{json}: images[1] (id=2): warning: image has no annotations")],
    ),
    "annotation_without_segmentation": (
        lambda d: d.annotation(4).pop("segmentation"),
        [
            (
                WARNING,
                "{json}: annotations[3] (id=4): warning: no segmentation; the instance has no mask",
            )
        ],
    ),
    "background_category_without_annotations": (
        lambda d: d.coco["categories"].insert(0, {"id": 0, "name": "_background_"}),
        [
            (
                WARNING,
                "{json}: categories[0] (id=0): warning: category '_background_' has no "
                "annotations: the model would learn a class without examples; labelling tools "
                "export '_background_' as a category: remove it, Mask R-CNN has its own "
                "background class",
            )
        ],
    ),
    "category_without_annotations": (
        lambda d: d.coco["categories"].append({"id": 12, "name": "fish"}),
        [
            (
                WARNING,
                "{json}: categories[3] (id=12): warning: category 'fish' has no annotations: the "
                "model would learn a class without examples",
            )
        ],
    ),
    "crowd_region_as_polygons": (
        lambda d: d.annotation(7).update(segmentation=[_rectangle(100, 60, 120, 80)]),
        [
            (
                WARNING,
                "{json}: annotations[4] (id=7).segmentation: warning: crowd region given as "
                "polygons (COCO writes crowd regions as RLE); Detectron2 leaves crowd regions "
                "out of training",
            )
        ],
    ),
    "file_name_used_twice": (
        lambda d: d.image(2).update(file_name="a.png"),
        [
            (
                WARNING,
                "{json}: images[1] (id=2).file_name: warning: file 'a.png' is also used by "
                "images[0] (id=1)",
            )
        ],
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED_CASES))
def test_malformed_dataset_reports_exact_problem(dataset, case):
    mutate, expected = MALFORMED_CASES[case]
    mutate(dataset)
    assert _reported(dataset.validate()) == [
        (severity, dataset.expand(line)) for severity, line in expected
    ]


def test_every_fault_in_a_multi_fault_dataset_is_named(dataset):
    dataset.annotation(1)["segmentation"] = [[2, 2, 12, 2]]
    dataset.annotation(7)["id"] = 2
    dataset.annotation(8)["category_id"] = 3
    dataset.annotation(4)["bbox"] = [4, 4, 130, 88]
    dataset.category(9)["name"] = ""
    dataset.coco["annotations"].remove(dataset.annotation(3))
    (dataset.image_root / "nested" / "c.png").unlink()

    problems = dataset.validate()

    expected = {
        (ERROR, "{json}: categories[2] (id=9): category has no name"),
        (
            ERROR,
            "{json}: annotations[0] (id=1).segmentation[0]: polygon has 2 points; needs at least 3",
        ),
        (
            ERROR,
            "{json}: annotations[2] (id=4).bbox: box [4, 4, 130, 88] extends outside the "
            "128x96 image",
        ),
        (
            ERROR,
            "{json}: annotations[3] (id=2): duplicate annotation id 2 (first used by annotations[1])",
        ),
        (ERROR, "{json}: annotations[4] (id=8).category_id: refers to unknown category id 3"),
        (WARNING, "{json}: images[1] (id=2): warning: image has no annotations"),
        (ERROR, "{root}/nested/c.png: images[2] (id=3): image file not found"),
    }
    assert set(_reported(problems)) == {(sev, dataset.expand(line)) for sev, line in expected}
    assert len(problems) == len(expected)
    assert has_errors(problems)


def test_warnings_alone_are_not_errors(dataset):
    dataset.coco["annotations"].remove(dataset.annotation(3))
    problems = dataset.validate()
    assert [problem.severity for problem in problems] == [WARNING]
    assert not has_errors(problems)
    assert not has_errors([])


def test_image_files_are_not_opened_when_check_images_is_off(dataset):
    (dataset.image_root / "a.png").unlink()
    (dataset.image_root / "b.jpg").write_bytes(b"garbage")
    assert dataset.validate(check_images=False) == []


def test_problem_rejects_unknown_severity():
    with pytest.raises(ValueError, match="severity"):
        Problem("fatal", "a.json", "<top level>", "boom")


# Statistics. Expected numbers come from the fixture's geometry, bucketed by COCO's
# thresholds: small < 32*32 = 1024 px, medium < 96*96 = 9216 px, large otherwise.


def test_stats_of_clean_dataset(dataset):
    dataset.write()
    stats = load_dataset_stats(dataset.json_path)

    assert stats.num_images == 3
    assert stats.num_annotations == 6
    assert stats.num_images_without_annotations == 0
    # cat: 10x10=100 small, stored area 1200 medium, 20x20=400 small.
    # dog: 40x40=1600 medium (compressed RLE), 50x50=2500 medium (uncompressed RLE).
    # bird: 120x88=10560 large.
    assert [(c.category_id, c.name, c.instances) for c in stats.classes] == [
        (1, "cat", 3),
        (5, "dog", 2),
        (9, "bird", 1),
    ]
    assert stats.instances_per_class == {"cat": 3, "dog": 2, "bird": 1}
    assert [(c.sizes.small, c.sizes.medium, c.sizes.large) for c in stats.classes] == [
        (2, 1, 0),
        (0, 2, 0),
        (0, 0, 1),
    ]
    assert (stats.sizes.small, stats.sizes.medium, stats.sizes.large) == (2, 3, 1)


def test_stats_prefer_stored_area_then_mask_then_box(dataset):
    # Stored area wins over the 10x10 polygon: 5000 is medium.
    dataset.annotation(1)["area"] = 5000
    # Without a mask the 20x20 box is measured: 400 is small.
    dataset.annotation(8).pop("segmentation")
    dataset.annotation(8)["bbox"] = [10, 10, 20, 20]
    # Image 2 loses its only annotation.
    dataset.coco["annotations"].remove(dataset.annotation(3))
    dataset.write()

    stats = load_dataset_stats(dataset.json_path)

    assert stats.num_annotations == 5
    assert stats.num_images_without_annotations == 1
    # cat: 5000 medium, 400 small. dog: 1600 medium, box 400 small. bird: 10560 large.
    assert [(c.name, c.sizes.small, c.sizes.medium, c.sizes.large) for c in stats.classes] == [
        ("cat", 1, 1, 0),
        ("dog", 1, 1, 0),
        ("bird", 0, 0, 1),
    ]
    assert (stats.sizes.small, stats.sizes.medium, stats.sizes.large) == (2, 2, 1)


def test_stats_reject_a_file_that_is_not_a_coco_dataset(tmp_path):
    json_path = tmp_path / "list.json"
    json_path.write_text("[]", encoding="utf-8")
    with pytest.raises(ValueError, match="not a COCO dataset"):
        load_dataset_stats(json_path)


def test_formatted_stats_show_one_aligned_row_per_class(dataset):
    dataset.write()
    text = format_dataset_stats(load_dataset_stats(dataset.json_path))
    lines = text.splitlines()

    assert "images: 3 (0 without annotations)" in lines
    assert "annotations: 6" in lines
    rows = {
        line.split()[1]: line.split() for line in lines if line.split()[:1] in (["1"], ["5"], ["9"])
    }
    # id, name, instances, share of all instances, small, medium, large
    assert rows["cat"] == ["1", "cat", "3", "50.0%", "2", "1", "0"]
    assert rows["dog"] == ["5", "dog", "2", "33.3%", "0", "2", "0"]
    assert rows["bird"] == ["9", "bird", "1", "16.7%", "0", "0", "1"]
    total = next(line for line in lines if line.split()[:1] == ["total"])
    assert total.split() == ["total", "6", "100.0%", "2", "3", "1"]
    table = [line for line in lines if line.strip() and ":" not in line]
    assert len({len(line.rstrip()) for line in table}) == 1  # right-aligned columns
