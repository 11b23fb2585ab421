"""What a SOURCE expands to, and how single image files are read: odd but valid ones, and bad
ones."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from instseg.inference.sources import SourceError, resolve_source, resolve_sources
from instseg.io.images import ImageReadError, read_image


def _jpeg(path: Path, size=(12, 16), value=90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full((*size, 3), value, dtype=np.uint8)
    image[: size[0] // 2] = 200
    cv2.imwrite(str(path), image)
    return path


def _touch(path: Path, data: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_folder_is_recursive_sorted_and_skips_hidden_and_output(tmp_path):
    root = tmp_path / "in"
    for rel in ("b.jpg", "a/z.PNG", "a/c.jpeg", ".hidden.jpg", ".cache/x.jpg", "out/o.jpg"):
        _jpeg(root / rel) if not rel.endswith("PNG") else _touch(root / rel, b"x")
    _touch(root / "notes.txt", b"not an input")
    source = resolve_source(root, exclude=root / "out")
    assert source.root == root
    assert [f.rel for f in source.files] == ["a/c.jpeg", "a/z.PNG", "b.jpg"]
    assert source.files[0].path == root / "a" / "c.jpeg"


def test_single_file_glob_and_missing(tmp_path):
    image = _jpeg(tmp_path / "d" / "one.jpg")
    _jpeg(tmp_path / "d" / "e" / "two.jpg")
    _jpeg(tmp_path / "d" / "e" / "three.png")
    source = resolve_source(image)
    assert (source.root, [f.rel for f in source.files]) == (image.parent, ["one.jpg"])

    source = resolve_source(f"{tmp_path}/d/**/*.jpg")
    assert source.root == tmp_path / "d"
    assert [f.rel for f in source.files] == ["e/two.jpg", "one.jpg"]
    with pytest.raises(SourceError, match="matches no image or video"):
        resolve_source(f"{tmp_path}/d/*.gif")
    with pytest.raises(SourceError, match="no such file"):
        resolve_source(tmp_path / "nothing")
    with pytest.raises(SourceError, match="no image or video files"):
        resolve_source(_touch(tmp_path / "empty" / "readme.md").parent)


def test_list_file_paths_are_relative_to_the_list(tmp_path):
    _jpeg(tmp_path / "data" / "img" / "b.jpg")
    _jpeg(tmp_path / "data" / "a.jpg")
    listing = tmp_path / "data" / "inputs.txt"
    listing.write_text("# inputs\nimg/b.jpg\n\n  a.jpg  \nimg/b.jpg\nmissing.jpg\n")
    source = resolve_source(listing)
    assert source.root == listing.parent
    # The list's order; a repeated entry once; a missing file stays (it becomes an error row).
    assert [f.rel for f in source.files] == ["img/b.jpg", "a.jpg", "missing.jpg"]

    elsewhere = tmp_path / "lists" / "l.txt"
    elsewhere.parent.mkdir()
    elsewhere.write_text("../data/img/b.jpg\n../data/a.jpg\n")
    source = resolve_source(elsewhere)
    assert source.root.resolve() == (tmp_path / "data").resolve()
    assert [f.rel for f in source.files] == ["img/b.jpg", "a.jpg"]


def test_videos_and_images_mix(tmp_path):
    _touch(tmp_path / "v" / "b.MP4", b"x")
    _touch(tmp_path / "v" / "a.mkv", b"x")
    source = resolve_source(tmp_path / "v")
    assert [(f.rel, f.kind) for f in source.files] == [("a.mkv", "video"), ("b.MP4", "video")]
    assert [f.kind for f in resolve_source(tmp_path / "v" / "a.mkv").files] == ["video"]
    _jpeg(tmp_path / "v" / "still.jpg")  # a mixed folder: one job for all of them
    source = resolve_source(tmp_path / "v")
    assert [(f.rel, f.kind) for f in source.files] == [
        ("a.mkv", "video"),
        ("b.MP4", "video"),
        ("still.jpg", "image"),
    ]
    assert [f.kind for f in resolve_source(str(tmp_path / "v" / "*")).files] == [
        "video",
        "video",
        "image",
    ]


def test_read_image_odd_but_valid(tmp_path):
    one = tmp_path / "one.png"
    cv2.imwrite(str(one), np.array([[[1, 2, 3]]], dtype=np.uint8))
    assert read_image(one).shape == (1, 1, 3)

    deep = (np.arange(20 * 30, dtype=np.uint32).reshape(20, 30) * 100).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), np.dstack([deep] * 3))
    image = read_image(tmp_path / "deep.png")
    assert image.dtype == np.uint8 and np.array_equal(image[:, :, 0], (deep >> 8).astype(np.uint8))

    gray = np.tile(np.arange(30, dtype=np.uint8), (20, 1))
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    image = read_image(tmp_path / "gray.png")
    assert image.shape == (20, 30, 3) and all(
        np.array_equal(image[:, :, c], gray) for c in range(3)
    )

    rgba = np.zeros((5, 6, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0  # fully transparent: the colour is kept, alpha dropped
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    image = read_image(tmp_path / "rgba.png")
    assert image.shape == (5, 6, 3) and (image[..., 0] == 200).all()

    jpeg = _jpeg(tmp_path / "ok.jpg")
    assert np.array_equal(read_image(jpeg), cv2.imread(str(jpeg)))


@pytest.mark.parametrize(
    ("name", "make", "reason"),
    [
        ("empty.jpg", lambda p: _touch(p), "empty file"),
        ("text.png", lambda p: _touch(p, b"this is text, not a PNG\n"), "not an image file"),
        ("missing.jpg", lambda p: None, "cannot read file"),
        ("cut.jpg", lambda p: _touch(p, _jpeg(p, (64, 64)).read_bytes()[:300]), "truncated JPEG"),
    ],
)
def test_read_image_bad_files(tmp_path, name, make, reason):
    path = tmp_path / name
    make(path)
    with pytest.raises(ImageReadError, match=reason) as info:
        read_image(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message


def test_several_sources_become_one(tmp_path):
    for rel in ("a/x.jpg", "b/x.jpg", "b/y.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    source = resolve_sources([str(tmp_path / "b"), str(tmp_path / "a" / "x.jpg")])
    assert source.root == tmp_path
    assert [f.rel for f in source.files] == ["b/x.jpg", "b/y.png", "a/x.jpg"]
    again = resolve_sources([str(tmp_path / "a" / "x.jpg"), str(tmp_path / "a" / "x.jpg")])
    assert [f.rel for f in again.files] == ["x.jpg"]


def test_images_and_videos_given_together_are_one_source(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"")
    (tmp_path / "v.mp4").write_bytes(b"")
    source = resolve_sources([str(tmp_path / "x.jpg"), str(tmp_path / "v.mp4")])
    assert [(f.rel, f.kind) for f in source.files] == [("x.jpg", "image"), ("v.mp4", "video")]


def test_arguments_before_the_first_key_are_sources(tmp_path, monkeypatch):
    from instseg.cli.predict import split_sources
    from instseg.config import ConfigError

    assert split_sources(["b.jpg", "c/*.jpg", "MODEL.DEVICE", "cpu"]) == (
        ["b.jpg", "c/*.jpg"],
        ["MODEL.DEVICE", "cpu"],
    )
    assert split_sources(["MODEL.DEVICE", "a.jpg"]) == ([], ["MODEL.DEVICE", "a.jpg"])
    assert split_sources(["b.jpg"]) == (["b.jpg"], [])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "SOLVER.BASE_LR").write_text("")
    with pytest.raises(
        ConfigError, match=r"SOLVER.BASE_LR: both a file and a config key; write \./"
    ):
        split_sources(["SOLVER.BASE_LR", "0.1"])
