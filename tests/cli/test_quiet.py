"""`isograd --version` prints the package's version; `--quiet` silences what loading a model
prints (Hugging Face progress bars, library log lines and warnings), not only isograd's bars."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import warnings
from pathlib import Path

import pytest

import isograd.lm
from isograd.cli import main

from ..lm.tiny_lm import save_tiny

ROOT = Path(__file__).parents[2]


def test_version_is_the_projects(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    # the installed distribution's metadata (pyproject's dynamic version, read at install)
    assert capsys.readouterr().out == f"isograd {importlib.metadata.version('isograd')}\n"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("tiny"))


def _noisy_load(monkeypatch):
    """load_model that, like a real download and load, shows a progress bar, logs and warns."""
    from huggingface_hub.utils import tqdm as hf_tqdm

    real = isograd.lm.load_model

    def load(*args, **kwargs):
        for _ in hf_tqdm(range(3), desc="noisy download bar"):
            pass
        logging.getLogger("transformers.modeling_utils").warning("noisy transformers log")
        warnings.warn("noisy library warning", UserWarning, stacklevel=1)
        return real(*args, **kwargs)

    monkeypatch.setattr(isograd.lm, "load_model", load)


@pytest.mark.parametrize("quiet", [False, True])
def test_quiet_silences_the_model_loading_too(quiet, model_dir, tmp_path, monkeypatch, capfd,
                                             caplog):
    import transformers  # noqa: F401  (its loggers configured as in a real run)

    _noisy_load(monkeypatch)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "Q: 2+2? A:", "answer": " 4"}) + "\n")
    out = tmp_path / "scored.jsonl"
    level = logging.getLogger("transformers").level
    with pytest.raises(SystemExit) as e:
        main(["score", "--input", str(pairs), "--out", str(out), "--model", str(model_dir),
              *(["--quiet"] if quiet else [])])
    assert e.value.code == 0 and out.exists()
    captured = capfd.readouterr()
    # the real loading bar of transformers too
    noise = ("noisy download bar", "noisy library warning", "Loading weights")
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("transformers")]
    if quiet:
        assert captured.out == "" and captured.err == "" and logged == []
    else:
        assert all(n in captured.err for n in noise), captured.err
        assert logged == ["noisy transformers log"]
        assert "scored 1 pair(s)" in captured.out
    # nothing stays silenced after the command
    assert logging.getLogger("transformers").level == level
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        warnings.warn("after", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["after"]
