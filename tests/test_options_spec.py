"""`isograd.options`: the mechanism every front door declares its options with (qa, score, and
any command added later), on a small made-up spec; and the LM options agree with `lm.score`."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import typer
from typer.testing import CliRunner

from isograd._choice import Choice
from isograd.lm.options import SCORING
from isograd.options import NEW, Option, Options


class Color(Choice):
    RED = "red"
    BLUE = "blue"


SPEC = Options((
    Option("color", "red", "Paint", choice=Color, stages=("paint",), recorded=True),
    Option("coats", 2, "Coats.", type=int, min=1, stages=("paint", "dry"), legacy=2,
           recorded=True),
    Option("fast", False, "Hurry.", type=bool, stages=("dry",), legacy={"dry": False}),
    Option("tags", (), "Comma-separated tags.", parse=lambda v: tuple(v.split(",")),
           coerce=tuple),
))


def test_resolve_fills_defaults_and_checks_values():
    assert SPEC.resolve({}) == {"color": "red", "coats": 2, "fast": False, "tags": ()}
    assert SPEC.resolve({"color": Color.BLUE, "tags": ["a"]})["color"] == "blue"
    assert SPEC.resolve({"tags": ["a", "b"]})["tags"] == ("a", "b")
    with pytest.raises(ValueError, match="color: unknown color 'green'; allowed: 'red', 'blue'"):
        SPEC.resolve({"color": "green"})
    with pytest.raises(ValueError, match="coats must be >= 1, got 0"):
        SPEC.resolve({"coats": 0})
    with pytest.raises(TypeError, match="'colour'"):
        SPEC.resolve({"colour": "red"})
    with pytest.raises(ValueError, match="declared twice: color"):
        Options((*SPEC, Option("color", "blue", "Again")))


def test_a_stage_holds_its_options_except_at_their_legacy_value():
    values = SPEC.resolve({})
    assert SPEC.stage_options("paint", values) == {"color": "red"}  # coats=2 is the legacy
    assert SPEC.stage_options("dry", values) == {}
    changed = SPEC.resolve({"coats": 3, "fast": True})
    assert SPEC.stage_options("paint", changed) == {"color": "red", "coats": 3}
    assert SPEC.stage_options("dry", changed) == {"coats": 3, "fast": True}
    assert SPEC["fast"].legacy_at("dry") is False and SPEC["fast"].legacy_at("paint") is NEW
    assert SPEC.stages() == {"paint", "dry"}


def test_config_class_signature_and_variants():
    Config = SPEC.config_class("Config")
    assert [f.name for f in dataclasses.fields(Config)] == ["color", "coats"]
    assert Config() == Config(color="red", coats=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().color = "blue"
    sig = SPEC.signature(inspect.Parameter("out", inspect.Parameter.POSITIONAL_OR_KEYWORD))
    assert list(sig.parameters) == ["out", "color", "coats", "fast", "tags"]
    assert sig.parameters["coats"].default == 2
    assert SPEC.with_(coats={"default": 4}).defaults()["coats"] == 4
    assert list(SPEC.without("fast", "tags").by_name) == ["color", "coats"]
    with pytest.raises(ValueError, match="no such option"):
        SPEC.with_(colour={"default": "blue"})


def test_typer_command_from_the_spec():
    seen = {}
    app = typer.Typer()
    app.command("paint")(SPEC.typer_command(lambda **kw: seen.update(kw), doc="Paint it."))
    app.command("other")(lambda: None)  # two commands: typer keeps the command's name
    res = CliRunner().invoke(app, ["paint", "--color", "blue", "--coats", "3", "--fast",
                                   "--tags", "a,b"])
    assert res.exit_code == 0, res.output
    assert seen == {"color": "blue", "coats": 3, "fast": True, "tags": ("a", "b")}
    for bad, flag in ((["--color", "green"], "--color"), (["--coats", "0"], "--coats")):
        res = CliRunner().invoke(app, ["paint", *bad])
        assert res.exit_code == 2 and flag in res.output, res.output
    assert "red | blue" in CliRunner().invoke(app, ["paint", "--help"]).output


def test_the_scoring_options_agree_with_lm_score():
    """`lm.score`'s own keyword defaults are the spec's (norm_method is its ``method``)."""
    from isograd.lm import score

    params = inspect.signature(score).parameters
    for o in SCORING:
        name = "method" if o.name == "norm_method" else o.name
        if name in params and o.name != "batch_size":  # the front doors batch their own way
            default = params[name].default
            assert getattr(default, "value", default) == o.default, o.name
