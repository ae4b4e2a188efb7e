"""`isograd serve` as a subprocess: SIGTERM stops new requests and finishes those in flight."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.lm.tiny_lm import save_tiny
from tests.serve.server import free_socket, post

ROOT = Path(__file__).resolve().parents[2]


def test_sigterm_finishes_in_flight_requests(tmp_path):
    folder = save_tiny(tmp_path / "tiny")
    with free_socket() as s:
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ISOGRAD_API_KEY": "k",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT),
                                          os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "isograd.cli", "serve", "--model", str(folder), "--port",
           str(port), "--max-wait-ms", "3000", "--threads", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    url, auth = f"http://127.0.0.1:{port}", {"Authorization": "Bearer k"}
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.2)
        out: dict = {}
        body = {"model": str(folder), "prompt": "in flight", "max_tokens": 4, "temperature": 0}
        t = threading.Thread(target=lambda: out.setdefault("r", post(url, "/v1/completions",
                                                                     body, headers=auth)))
        t.start()
        while httpx.get(url + "/health", timeout=5).json()["queue_depth"] < 1:
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)  # while the request waits for its batch
        refused = False
        for _ in range(40):  # the listening socket closes at once; the request stays in flight
            try:
                httpx.get(url + "/health", timeout=1)
            except httpx.TransportError:
                refused = True
                break
            time.sleep(0.05)
        assert refused and t.is_alive(), "a new request got in after SIGTERM"
        t.join(timeout=60)
        assert out["r"].status_code == 200, out["r"].text
        assert out["r"].json()["choices"][0]["uncertainty"]["n_tokens"] >= 1
        # uvicorn re-raises the signal once it has shut down cleanly (exit status -15)
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
        log = proc.stdout.read()
        assert "Finished server process" in log and "Traceback" not in log, log
        with pytest.raises(httpx.TransportError):  # no new request after the stop
            httpx.get(url + "/health", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
