"""The benchmarks in scripts/: each imports against the current library and builds its parser.

They run for minutes, so the suite does not run them; a renamed library function must still not
leave one broken until the next time somebody measures.
"""

import importlib.util
import sys

import pytest
from conftest import REPO_ROOT

BENCHMARKS = sorted((REPO_ROOT / "scripts").glob("bench_*.py"))


def test_every_benchmark_is_found():
    assert len(BENCHMARKS) >= 9


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.stem)
def test_benchmark_imports_and_parses_help(path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location(f"_bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [path.name, "--help"])
    with pytest.raises(SystemExit) as exit_info:
        module.main()
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out
