"""The lock of a run folder: one live process at a time writes into it."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class RunLockedError(OSError):
    """Another live process holds the run directory's lock."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold ``DIR/run.lock`` (holding this process's pid) for the duration of the block.

    Raises:
        RunLockedError: a live process holds it. A lock left by a dead process is taken over,
            with a note on stderr.
    """
    out.mkdir(parents=True, exist_ok=True)
    path = out / "run.lock"
    me = str(os.getpid())
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            text: str | None = ""
            for _ in range(10):  # a holder that has just created the file writes its pid next
                try:
                    text = path.read_text(encoding="utf-8", errors="replace").strip()
                except FileNotFoundError:  # released meanwhile: try to take it again
                    text = None
                if text != "":
                    break
                time.sleep(0.1)
            if text is None:
                continue
            pid = int(text) if text.isdigit() else None
            if pid is not None and pid != os.getpid() and _alive(pid):
                raise RunLockedError(
                    f"{out} is in use by process {pid} (lock file {path}); wait for it to "
                    "finish or use another --out") from None
            print(f"note: {path}: taking over the lock of process {text or '?'}, which is no "
                  "longer running", file=sys.stderr)
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(me + "\n")
        break
    try:
        yield
    finally:
        try:
            if path.read_text(encoding="utf-8").strip() == me:
                path.unlink()
        except FileNotFoundError:
            pass
