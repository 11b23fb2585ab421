"""instseg dataset validate --masks: each problem of an image/mask folder pair, by file."""

import cv2
import numpy as np

from instseg.cli import main
from instseg.data.mask_checks import validate_mask_folder
from instseg.data.semantic import write_semantic_masks

CLASSES = ["background", "ellipse", "triangle", "rectangle", "star", "cross"]


def _pair(tmp_path, sample_dataset):
    masks = tmp_path / "masks"
    write_semantic_masks(sample_dataset.val_json, masks)
    return sample_dataset.val_images, masks


def test_clean_folders_have_no_problems(tmp_path, sample_dataset):
    images, masks = _pair(tmp_path, sample_dataset)
    assert validate_mask_folder(images, masks, CLASSES) == []


def test_every_kind_of_broken_mask_is_named(tmp_path, sample_dataset):
    images, masks = _pair(tmp_path, sample_dataset)
    (masks / "00000.png").unlink()  # image without mask
    cv2.imwrite(str(masks / "00001.png"), np.zeros((128, 128, 3), np.uint8))  # RGB
    cv2.imwrite(str(masks / "00002.png"), np.zeros((64, 128), np.uint8))  # wrong size
    bad = np.zeros((128, 128), np.uint8)
    bad[0, 0] = 9
    cv2.imwrite(str(masks / "00003.png"), bad)  # unknown class id
    cv2.imwrite(str(masks / "extra.png"), bad)  # mask without image
    problems = {(p.file.rsplit("/", 1)[1], p.severity): p.message for p in
                validate_mask_folder(images, masks, CLASSES)}  # fmt: skip
    assert "no mask 00000.png" in problems[("00000.jpg", "error")]
    assert "RGB image, not class ids" in problems[("00001.png", "error")]
    assert "128x64 but the image 00002.jpg is 128x128" in problems[("00002.png", "error")]
    assert "unknown class ids [9]" in problems[("00003.png", "error")]
    assert "no image" in problems[("extra.png", "warning")]
    assert len(problems) == 5


def test_cli_exit_status_and_lines(tmp_path, sample_dataset, capsys):
    images, masks = _pair(tmp_path, sample_dataset)
    base = ["dataset", "validate", "--images", str(images)]
    assert main([*base, "--masks", str(masks), "--classes", ",".join(CLASSES)]) == 0
    assert "0 error(s)" in capsys.readouterr().out
    cv2.imwrite(str(masks / "00001.png"), np.zeros((128, 128, 3), np.uint8))
    assert main([*base, "--masks", str(masks)]) == 1
    assert "00001.png: mask: RGB image" in capsys.readouterr().out
    assert main(base) == 2
    assert "--json" in capsys.readouterr().err
