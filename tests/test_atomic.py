"""Atomic writes: what a killed writer leaves is removed by the next write into its folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from cgat_dgl.atomic import atomic_write

WRITER = """
import sys, time
from pathlib import Path
from cgat_dgl.atomic import atomic_write
with atomic_write(Path(sys.argv[1])) as stream:
    stream.write(b"partial")
    stream.flush()
    print("writing", flush=True)
    time.sleep(60)
"""


def _killed_writer(target: Path) -> None:
    """A process SIGKILLed in the middle of an atomic write of ``target``."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, env=env)
    assert process.stdout is not None and process.stdout.readline() == b"writing\n"
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_the_next_write_removes_a_killed_writers_temporary_file(tmp_path: Path) -> None:
    _killed_writer(tmp_path / "pack-1.npz")
    [left] = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert left.name.startswith(".pack-1.npz.") and left.read_bytes() == b"partial"
    assert not (tmp_path / "pack-1.npz").exists()

    with atomic_write(tmp_path / "pack-2.npz") as stream:  # another file of the same folder
        stream.write(b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pack-2.npz"]


def test_a_live_writers_temporary_file_is_kept(tmp_path: Path) -> None:
    with atomic_write(tmp_path / "a.txt", "w") as outer:
        outer.write("a")
        with atomic_write(tmp_path / "b.txt", "w") as inner:  # same process, still writing a.txt
            inner.write("b")
        assert len([p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]
    assert (tmp_path / "a.txt").read_text() == "a"
