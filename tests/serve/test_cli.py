"""`isograd serve` on the command line: options reach `isograd.serve.run`, bad ones exit 2."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from isograd.cli import app


@pytest.fixture
def seen(monkeypatch):
    import isograd.serve

    calls: dict = {}
    monkeypatch.setattr(isograd.serve, "run", lambda model, **kw: calls.update(model=model, **kw))
    return calls


def test_options_reach_run(seen, monkeypatch):
    monkeypatch.setenv("ISOGRAD_API_KEY", "from-env")
    res = CliRunner().invoke(app, ["serve", "--port", "9000", "--max-batch-size", "4",
                                   "--max-wait-ms", "25", "--queue-size", "3",
                                   "--attn-implementation", "eager", "--dtype", "fp64"])
    assert res.exit_code == 0, res.output
    assert seen["model"] == "smollm2-135m" and seen["host"] == "127.0.0.1"
    assert (seen["port"], seen["max_batch_size"], seen["max_wait_ms"], seen["queue_size"]) == (
        9000, 4, 25.0, 3)
    assert seen["api_key"] == "from-env" and seen["attn_implementation"] == "eager"
    assert seen["dtype"] == "fp64" and seen["detector"] is None


@pytest.mark.parametrize("flags, flag", [
    (["--dtype", "fp8"], "--dtype"), (["--max-batch-size", "0"], "--max-batch-size"),
    (["--detector", "/no/such/file.json"], "--detector"), (["--port", "70000"], "--port"),
    (["--model", "/no/such/folder"], "--model"), (["--request-timeout", "0"], "--request-timeout"),
])
def test_bad_values_exit_2_naming_the_flag(seen, capsys, flags, flag):
    from isograd import cli

    with pytest.raises(SystemExit) as e:
        cli.main(["serve", *flags])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and flag in err and len(err.splitlines()) == 1, err
    assert not seen  # refused before any model is loaded
