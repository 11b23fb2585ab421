"""The Detectron2 installation: importable, pure Python, and no stray packages beside it."""

import base64
import hashlib
import importlib.metadata
import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO_ROOT

INSTALLER = REPO_ROOT / "scripts" / "install_detectron2.py"
DIST_INFO = "sal_detectron2-0.7.2.dist-info"
# What the published sal-detectron2 wheel carries, in miniature.
FAKE_WHEEL_FILES = {
    "detectron2/__init__.py": b'__version__ = "0.7.2"\n',
    "detectron2/layers/__init__.py": b"",
    "detectron2/model_zoo/configs/Base-RCNN-FPN.yaml": b"VERSION: 2\n",
    "detectron2/_C.cpython-310-x86_64-linux-gnu.so": b"\x7fELF binary",
    "detectron2/__pycache__/__init__.cpython-310.pyc": b"\x00cached",
    "tools/__init__.py": b"",
    "tools/train_net.py": b"print('train')\n",
    f"{DIST_INFO}/METADATA": b"Metadata-Version: 2.1\nName: sal-detectron2\nVersion: 0.7.2\n",
    f"{DIST_INFO}/WHEEL": (
        b"Wheel-Version: 1.0\nGenerator: bdist_wheel (0.43.0)\n"
        b"Root-Is-Purelib: false\nTag: cp310-cp310-linux_x86_64\n"
    ),
    f"{DIST_INFO}/top_level.txt": b"detectron2\ntools\n",
    f"{DIST_INFO}/RECORD": b"detectron2/__init__.py,,\n",
}


def _load_installer():
    spec = importlib.util.spec_from_file_location("install_detectron2", INSTALLER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _detectron2_distribution() -> str:
    (name,) = importlib.metadata.packages_distributions()["detectron2"]
    return name


def test_detectron2_imports_in_a_fresh_interpreter():
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import detectron2; print(detectron2.__file__)",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).is_relative_to(Path(sys.prefix))


def test_installed_distribution_is_known_to_pip():
    name = _detectron2_distribution()
    assert name in ("sal-detectron2", "sal_detectron2", "detectron2")
    if name == "detectron2":
        return  # the official build from source
    result = subprocess.run(
        [sys.executable, "-m", "pip", "show", "sal-detectron2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Name: sal-detectron2" in result.stdout


def test_no_stray_tools_package_or_foreign_binary():
    import detectron2

    package_dir = Path(detectron2.__file__).parent
    assert not list(package_dir.glob("_C.cpython-310*.so"))
    dist = importlib.metadata.distribution(_detectron2_distribution())
    files = [str(f) for f in dist.files or []]
    assert not [f for f in files if f.startswith("tools/")]
    tools = importlib.util.find_spec("tools")
    if tools is not None and tools.origin:
        owned = {Path(dist.locate_file(f)).resolve() for f in files}
        assert Path(tools.origin).resolve() not in owned
    if dist.metadata["Name"] != "detectron2":
        assert dist.read_text("top_level.txt").split() == ["detectron2"]


@pytest.fixture
def fake_wheel(tmp_path):
    wheel = tmp_path / "in" / "sal_detectron2-0.7.2-cp310-cp310-manylinux1_x86_64.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in FAKE_WHEEL_FILES.items():
            zf.writestr(name, data)
    return wheel


def test_strip_wheel_keeps_only_pure_python_detectron2(fake_wheel, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    packed = _load_installer().strip_wheel(fake_wheel, out_dir)
    assert packed == out_dir / "sal_detectron2-0.7.2-py3-none-any.whl"

    with zipfile.ZipFile(packed) as zf:
        names = set(zf.namelist())
        contents = {name: zf.read(name) for name in names}
    assert names == {
        "detectron2/__init__.py",
        "detectron2/layers/__init__.py",
        "detectron2/model_zoo/configs/Base-RCNN-FPN.yaml",
        f"{DIST_INFO}/METADATA",
        f"{DIST_INFO}/WHEEL",
        f"{DIST_INFO}/top_level.txt",
        f"{DIST_INFO}/RECORD",
    }
    for name in names - {f"{DIST_INFO}/WHEEL", f"{DIST_INFO}/top_level.txt", f"{DIST_INFO}/RECORD"}:
        assert contents[name] == FAKE_WHEEL_FILES[name]
    assert contents[f"{DIST_INFO}/top_level.txt"] == b"detectron2\n"
    wheel_meta = contents[f"{DIST_INFO}/WHEEL"].decode().splitlines()
    assert "Root-Is-Purelib: true" in wheel_meta
    assert "Tag: py3-none-any" in wheel_meta
    assert not [line for line in wheel_meta if "cp310" in line]

    # RECORD lists every other file with its real hash and size, and itself without.
    records = [line.split(",") for line in contents[f"{DIST_INFO}/RECORD"].decode().splitlines()]
    assert {path for path, _, _ in records} == names
    for path, digest, size in records:
        if path == f"{DIST_INFO}/RECORD":
            assert (digest, size) == ("", "")
            continue
        data = contents[path]
        expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        assert digest == f"sha256={expected}"
        assert int(size) == len(data)


def test_stripped_wheel_installs_with_pip(fake_wheel, tmp_path):
    packed = _load_installer().strip_wheel(fake_wheel, tmp_path)
    target = tmp_path / "site"
    result = subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
            "--disable-pip-version-check", "--target", str(target), str(packed),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (target / "detectron2" / "__init__.py").is_file()
    assert not (target / "tools").exists()
    assert not list((target / "detectron2").glob("_C*.so"))


def test_a_source_build_keeps_its_binary_but_not_tools(fake_wheel, tmp_path):
    """The official source's wheel: its _C stays (built for this Python), tools/ goes."""
    built = tmp_path / "detectron2-0.6-cp311-cp311-linux_x86_64.whl"
    fake_wheel.rename(built)
    packed = _load_installer().strip_wheel(built, tmp_path / "in", pure=False)
    assert packed.name == built.name
    with zipfile.ZipFile(packed) as zf:
        names = set(zf.namelist())
        top_level = zf.read(f"{DIST_INFO}/top_level.txt")
        wheel_meta = zf.read(f"{DIST_INFO}/WHEEL")
    assert not [n for n in names if n.startswith("tools/")]
    assert [n for n in names if n.startswith("detectron2/_C.")]
    assert top_level == b"detectron2\n"
    assert wheel_meta == FAKE_WHEEL_FILES[f"{DIST_INFO}/WHEEL"]
