"""Smoke test of the harness (not collected by default: `testpaths = ["tests"]`).

python -m pytest bench/test_harness.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_quick_run_sqlite(tmp_path: Path) -> None:
    p = subprocess.run(
        [
            sys.executable,
            str(HERE / "run.py"),
            "--quick",
            "--backends",
            "sqlite",
            "--libs",
            "ormkit,sqlite3",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    data = json.loads((tmp_path / "quick.json").read_text())
    rows = data["results"]["sqlite"]
    for w in ("W1", "W2", "W3", "W4", "W6a", "W6b", "W7"):
        for lib in ("ormkit", "sqlite3"):
            assert rows[lib][w]["status"] == "ok", (lib, w, rows[lib][w])
            assert rows[lib][w]["median"] > 0
    assert rows["ormkit-tuples"]["W2"]["status"] == "ok"
    assert (tmp_path / "quick.md").read_text().count("| W1 get by pk") == 2
    assert (tmp_path / "quick.png").stat().st_size > 0


def test_cross_check_compares_only_what_ran() -> None:
    sys.path.insert(0, str(HERE))
    import run

    def rep(values: dict) -> dict:
        return {"backend": "sqlite", "values": values}

    # No library ran W6a / W6b: nothing to compare, and no MISMATCH reported.
    assert run.cross_check([rep({}), rep({})]) == {"sqlite": []}
    notes = run.cross_check([rep({"a:count": 7, "a:avg": 1.5}), rep({"b:count": 7, "b:avg": 1.5})])["sqlite"]
    assert [n.split(":")[0] + ":" + n.split(":")[1].split()[0] for n in notes] == ["count:equal", "avg(age):equal"]
    notes = run.cross_check([rep({"a:count": 7}), rep({"b:count": 8})])["sqlite"]
    assert len(notes) == 1 and "MISMATCH" in notes[0]
