"""The output naming rule: unique across inputs and output kinds, inside the output folder,
never an input."""

import os

import pytest

from instseg.config import ConfigError
from instseg.inference.output_plan import check_output_paths, plan_outputs

IMAGE_KINDS = ("annotated", "masks")


def _all_names(plan):
    return [n for outputs in plan for n in outputs.values()]


def test_plain_names_mirror_the_input_tree():
    plan = plan_outputs(["a.jpg", "sub/b.png", "c.gif"], [IMAGE_KINDS] * 3)
    assert plan == [
        {"annotated": "a.jpg", "masks": "a.masks.png"},
        {"annotated": "sub/b.png", "masks": "sub/b.masks.png"},
        {"annotated": "c.jpg", "masks": "c.masks.png"},  # OpenCV writes no GIF
    ]


@pytest.mark.parametrize(
    "rels",
    [
        ["a.jpg", "a.png"],  # both would give a.masks.png
        ["a.jpg", "a.jpg.png"],  # a.jpg's whole-name mask would be a.jpg.masks.png ...
        ["a.jpg", "a.jpg.masks.png"],  # ... and so would this input's annotated copy
        ["x.jpg", "x.masks.png"],  # x's mask is the other input's annotated image
        ["A.jpg", "a.png"],  # one file on a case-insensitive disk
        ["x.gif", "x.jpg"],  # x.gif's annotated image is x.jpg
        ["x.gif", "x.jpg", "x.gif.jpg"],
    ],
)
def test_clashing_inputs_get_distinct_outputs(rels):
    plan = plan_outputs(rels, [IMAGE_KINDS] * len(rels))
    names = [n.casefold() for n in _all_names(plan)]
    assert len(names) == len(set(names)), plan


def test_videos_of_one_stem_in_two_folders_and_in_one_folder():
    rels = ["a/clip.mp4", "b/clip.mp4", "c/clip.avi", "c/clip.mp4"]
    plan = plan_outputs(rels, [("video", "predictions")] * 4)
    assert plan[0] == {"video": "a/clip.mp4", "predictions": "a/clip.predictions.jsonl"}
    assert plan[1]["video"] == "b/clip.mp4"
    assert {plan[2]["video"], plan[3]["video"]} == {"c/clip.avi.mp4", "c/clip.mp4.mp4"}
    assert len(set(_all_names(plan))) == 8


def test_reserved_names_are_never_given_to_an_input():
    plan = plan_outputs(["manifest.csv.png"], [("annotated",)], reserved=("manifest.csv",))
    assert plan == [{"annotated": "manifest.csv.png"}]
    plan = plan_outputs(["predictions.gif"], [("annotated",)], reserved=("predictions.jpg",))
    assert plan[0]["annotated"] != "predictions.jpg"


def test_an_output_through_a_symlink_out_of_the_folder_is_refused(tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    os.symlink(elsewhere, out / "sub")
    with pytest.raises(ConfigError, match=r"sub/x\.jpg would be written outside the output"):
        check_output_paths(out, ["sub/x.jpg"], [])


def test_an_output_that_is_an_input_is_refused(tmp_path):
    image = tmp_path / "x.jpg"
    image.write_bytes(b"data")
    with pytest.raises(ConfigError, match="would replace the input"):
        check_output_paths(tmp_path, ["x.jpg"], [image])
    check_output_paths(tmp_path / "out", ["x.jpg"], [image])  # elsewhere: fine
