"""Every script in examples/ runs on its own and exits cleanly."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

EXAMPLES = sorted((pathlib.Path(__file__).parent.parent / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script: pathlib.Path, tmp_path: pathlib.Path) -> None:
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip(), "an example should print what it does"


def test_quickstart_prints_results(tmp_path: pathlib.Path) -> None:
    script = pathlib.Path(__file__).parent.parent / "examples" / "quickstart.py"
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert "Created user with id=1" in out.stdout
    assert "IntegrityError" in out.stdout and "FieldError" in out.stdout
