"""benchmarks/gpu_check.sh: its CPU dry run (tiny sizes) passes and writes every section."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    env.pop("OUT", None)
    return subprocess.run(["bash", str(ROOT / "benchmarks/gpu_check.sh"), *args],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp)


def test_cpu_dry_run_writes_every_section(tmp_path):
    out = tmp_path / "g.json"
    res = _run("--device", "cpu", "--repeats", "1", "--out", str(out), tmp=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    d = json.loads(out.read_text())
    assert d["ok"] is True and d["failures"] == [] and d["size"] == "tiny"
    assert 0 <= d["exactness"]["ghost_rel_err"] <= 2e-2
    assert d["exactness"]["loop_rel_err"] <= 2e-2
    for k in ("plain", "ghost", "loop"):
        assert d["speed"][k]["median_s"] > 0
    assert d["speed"]["plain"]["x_plain"] == 1.0
    assert d["score"]["pairs"] == 8 and d["score"]["loop_rel_diff_first_two"] <= 2e-2
    assert d["fsdp"]["loop_refused"] and d["fsdp"]["rel_diff"] <= 2e-2
    assert d["fsdp"]["fsdp_auto"]["median_s"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_without_cuda_it_fails_loudly(tmp_path):
    res = _run("--out", str(tmp_path / "g.json"), tmp=tmp_path)
    assert res.returncode == 2 and "CUDA is not available" in res.stderr
    assert not (tmp_path / "g.json").exists()
