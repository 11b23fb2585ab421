"""Install Detectron2 into the running interpreter's environment.

Detectron2 is not published on PyPI. When ``DETECTRON2_SOURCE`` names a local checkout or a git
URL, that official source is built into a wheel with its C++ ops, which is installed without the
top-level ``tools`` package its setup.py also packs. Otherwise the PyPI package
``sal-detectron2`` is used: it carries Detectron2's Python code as a cp310 wheel, together with a
stray top-level ``tools`` package and a compiled ``_C`` for CPython 3.10. The wheel is repacked as a
pure-Python wheel holding only ``detectron2`` (without the binary that cannot load here) and
installed with pip, so that ``pip uninstall`` and ``pip list`` see it like any other package.

Usage: python scripts/install_detectron2.py [--force]
"""

import argparse
import base64
import hashlib
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

FALLBACK_REQUIREMENT = "sal-detectron2==0.7.2"
# Detectron2's own runtime needs (its setup.py install_requires), installed beside either source.
RUNTIME_REQUIREMENTS = [
    "termcolor>=1.1",
    "yacs>=0.1.8",
    "tabulate",
    "cloudpickle",
    "omegaconf>=2.1,<2.4",
    "hydra-core>=1.1",
    "packaging",
]


def pip(*args: str) -> None:
    subprocess.check_call([sys.executable, "-m", "pip", *args])


def install_from_source(source: str) -> None:
    """Build the official Detectron2 (with its C++/CUDA ops) from a checkout or a git URL."""
    target = source
    if os.path.isdir(source):
        target = str(Path(source).resolve())
    elif not source.startswith(("git+", "http://", "https://", "file://")):
        raise SystemExit(f"DETECTRON2_SOURCE={source!r} is neither a directory nor a git/http URL")
    elif not source.startswith("git+"):
        target = "git+" + source
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        # Detectron2's setup.py imports torch, so it must build against the environment's torch.
        pip("wheel", "--no-build-isolation", "--no-deps", "--wheel-dir", str(tmp_dir), target)
        (wheel,) = tmp_dir.glob("detectron2-*.whl")
        (tmp_dir / "packed").mkdir()
        packed = str(strip_wheel(wheel, tmp_dir / "packed", pure=False))
        pip("install", "--no-deps", "--force-reinstall", packed)
        pip("install", packed)  # its missing dependencies; installed pins stay as they are


def strip_wheel(wheel: Path, out_dir: Path, pure: bool = True) -> Path:
    """Repack a Detectron2 wheel holding only the ``detectron2`` package (no ``tools``).

    ``pure``: also drop the compiled ``_C`` and tag the wheel py3-none-any (the sal-detectron2
    wheel, whose binary is for CPython 3.10); otherwise the wheel keeps its binary and tags.
    """
    name = wheel.name.split("-")
    packed = out_dir / (f"{name[0]}-{name[1]}-py3-none-any.whl" if pure else wheel.name)
    records = []
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as dst:
        dist_info = next(n.split("/")[0] for n in src.namelist() if ".dist-info/" in n)
        for item in src.infolist():
            path = item.filename
            keep = path.startswith(("detectron2/", dist_info + "/"))
            if (
                not keep
                or "/__pycache__/" in path
                or (pure and re.search(r"detectron2/_C\..*\.so$", path))
                or path.endswith("/RECORD")
            ):
                continue
            data = src.read(item)
            if path == f"{dist_info}/top_level.txt":
                data = b"detectron2\n"
            elif path == f"{dist_info}/WHEEL" and pure:
                text = data.decode()
                text = re.sub(r"(?m)^Root-Is-Purelib:.*$", "Root-Is-Purelib: true", text)
                text = re.sub(r"(?m)^Tag:.*$", "Tag: py3-none-any", text)
                data = text.encode()
            dst.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            records.append(f"{path},sha256={digest},{len(data)}")
        records.append(f"{dist_info}/RECORD,,")
        dst.writestr(f"{dist_info}/RECORD", "\n".join(records) + "\n")
    return packed


def install_fallback() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        pip(
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.10",
            "--dest",
            str(tmp_dir / "download"),
            FALLBACK_REQUIREMENT,
        )
        (wheel,) = (tmp_dir / "download").glob("*.whl")
        pip(
            "install", "--quiet", "--no-deps", "--force-reinstall", str(strip_wheel(wheel, tmp_dir))
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--force", action="store_true", help="reinstall even if importable")
    args = parser.parse_args()
    source = os.environ.get("DETECTRON2_SOURCE", "").strip()
    if importlib.util.find_spec("detectron2") is not None and not args.force:
        print("detectron2 already installed; use --force to reinstall")
        return
    pip("install", "--quiet", *RUNTIME_REQUIREMENTS)
    if source:
        print(f"Installing Detectron2 from DETECTRON2_SOURCE={source}")
        install_from_source(source)
    else:
        print(f"DETECTRON2_SOURCE not set; installing {FALLBACK_REQUIREMENT} (Python code only)")
        install_fallback()
    subprocess.check_call(
        [sys.executable, "-c", "import detectron2; print('detectron2', detectron2.__version__)"]
    )


if __name__ == "__main__":
    main()
