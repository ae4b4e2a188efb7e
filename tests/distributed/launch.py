"""Launch torchrun jobs from the tests: 1 thread per process, gloo, this checkout's sources."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import isograd

ROOT = Path(__file__).resolve().parents[2]
SRC = Path(isograd.__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return int(s.getsockname()[1])


def env(**extra: str) -> dict[str, str]:
    """The test environment for child processes: sources first, offline, one thread each."""
    e = dict(os.environ)
    first = extra.pop("PYTHONPATH_FIRST", "")
    e["PYTHONPATH"] = os.pathsep.join(
        [p for p in (first, str(SRC), str(ROOT), e.get("PYTHONPATH", "")) if p])
    # the venv's scripts (isograd, torchrun) even when only its python was called
    e["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), e.get("PATH", "")])
    e.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
             TOKENIZERS_PARALLELISM="false", **extra)
    return e


def torchrun_cmd(*, nproc: int = 2, nnodes: int = 1, node_rank: int = 0,
                 port: int | None = None) -> list[str]:
    """``python -m torch.distributed.run`` (= torchrun) with a local rendezvous."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}"]
    if nnodes == 1 and port is None:
        return cmd + ["--standalone"]
    return cmd + [f"--nnodes={nnodes}", f"--node-rank={node_rank}", "--rdzv-backend=c10d",
                  f"--rdzv-endpoint=localhost:{port}"]


def run(cmd: list[str], *, timeout: float = 300, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env(**extra), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def readme_commands() -> list[str]:
    """The ``torchrun`` lines of the README's "Scaling out" section, in order."""
    import re

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Scaling out")
    end = text.find("\n## ", start + 1)
    blocks = re.findall(r"```bash\n(.*?)```", text[start:end], re.S)
    return [ln for b in blocks for ln in b.splitlines() if ln.startswith("torchrun ")]


def cpu_variant(line: str, *, nproc: int, replace: dict[str, str], extra: list[str],
                node_rank: int = 0, port: int = 0) -> list[str]:
    """A README command as run on the CPU: no ``--device cuda``, `nproc` processes, the flags
    in `replace` given those values (appended when the line lacks them), `extra` appended;
    every other argument as written."""
    import shlex

    args = shlex.split(line.replace("$NODE_RANK", str(node_rank))
                       .replace("HOST:29500", f"localhost:{port}"))
    values = {"--nproc-per-node": str(nproc), **replace}
    got: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--device":
            assert args[i + 1] == "cuda", line
            i += 2
            continue
        got.append(a)
        if a in values:
            got.append(values.pop(a))
            i += 2
            continue
        i += 1
    assert "--nproc-per-node" not in values, line
    return got + [x for kv in values.items() for x in kv] + extra
