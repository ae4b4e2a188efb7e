"""The one declaration per option (`isograd.qa.options`): the front doors hold no defaults or
choice lists of their own, every entry reaches the typer command and the fingerprints of the
stages it names (and no others), and the two fingerprint bugs stay fixed: the MC1 generate stage
scores with the run's norm method, and a changed default never resumes rows of the old one."""

from __future__ import annotations

import dataclasses
import inspect
import json

import pytest
import typer
from typer.testing import CliRunner

import isograd.lm
from isograd.cli import app
from isograd.options import NEW
from isograd.qa import stagerules
from isograd.qa.options import QA, SCORE, QAConfig
from isograd.qa.pipeline import run_qa
from isograd.qa.score_pairs import score_file
from isograd.qa.stagerules import stage_configs
from isograd.rows.stagefiles import RunMismatchError, open_stage

# the stages of a run with the defaults: QAConfig() runs every stage but the trace
STAGES = ("generate", "grade", "score", "trace", "samples")


def _other(o):
    """A valid value of option `o` other than its default."""
    if o.choice is not None:
        return next(m.value for m in o.choice if m.value != o.default)
    if o.type is bool:
        return not o.default
    if o.type is int:
        return (o.default or 1) + 2
    if o.type is float:
        return o.default * 2 + 0.5
    return {"methods": ("msp",), "baseline_options": {"msp": {}}}.get(o.name, "changed")


def _click(name):
    return typer.main.get_command(app).commands[name]


def test_the_front_doors_hold_no_defaults_of_their_own():
    for fn, spec in ((run_qa, QA), (score_file, SCORE)):
        code = fn.__code__
        # the real parameters: the paths, loaded, command and **options (nothing else)
        assert code.co_flags & inspect.CO_VARKEYWORDS
        assert set(code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]) <= {
            "out", "input", "loaded", "command"}
        shown = inspect.signature(fn).parameters
        assert {k: p.default for k, p in shown.items() if k in spec.by_name} == spec.defaults()
    fields = dataclasses.fields(QAConfig)
    assert [f.name for f in fields] == [o.name for o in QA if o.recorded]
    assert QAConfig().to_json() == {o.name: list(o.default) if isinstance(o.default, tuple)
                                    else o.default for o in QA if o.recorded}


@pytest.mark.parametrize("command, spec", [("qa", QA), ("score", SCORE)])
def test_every_entry_reaches_the_typer_command(command, spec):
    params = {p.name: p for p in _click(command).params}
    for o in spec:
        if not o.cli:
            assert o.name not in params
            continue
        p = params[o.name]
        assert o.cli_flag in p.opts, (o.name, p.opts)
        want = o.default if o.cli_default is NEW else o.cli_default
        assert p.default == (list(want) if isinstance(want, tuple) else want), o.name
        assert o.help in p.help


@pytest.mark.parametrize("command, spec", [("qa", QA), ("score", SCORE)])
def test_every_choice_is_checked_at_parse_time(command, spec, tmp_path):
    args = (["qa", "--dataset", "triviaqa", "--out", str(tmp_path / "run")] if command == "qa"
            else ["score", "--input", str(tmp_path / "in.jsonl"), "--out",
                  str(tmp_path / "o.jsonl")])
    choices = [o for o in spec if o.choice is not None and o.cli]
    must = {"qa": {"stage", "layer_scale", "norm_method", "prediction", "judge", "prompt"},
            "score": {"covariance", "layer_scale", "norm_method", "prediction", "shard"}}
    assert must[command] <= {o.name for o in choices}
    for o in choices:
        res = CliRunner().invoke(app, [*args, o.cli_flag, "no-such-value"])
        assert res.exit_code == 2, (o.name, res.output)
        # click's parse-time error names every allowed value of the Enum
        assert all(m.value in res.output for m in o.choice), (o.name, res.output)
        assert not (tmp_path / "run").exists() and not (tmp_path / "o.jsonl").exists()


def test_validate_study_is_checked_at_parse_time(tmp_path):
    res = CliRunner().invoke(app, ["validate", "--out", str(tmp_path / "v"), "--study", "both"])
    assert res.exit_code == 2 and "agreement" in res.output and "covariance" in res.output
    assert not (tmp_path / "v").exists()


def _fingerprints(cfg, multiple_choice=False):
    configs = stage_configs(cfg, {}, multiple_choice=multiple_choice)
    return {s: c.options for s, c in configs.items()}


@pytest.mark.parametrize("option", [o for o in QA if o.recorded and o.name != "methods"],
                         ids=lambda o: o.name)
def test_an_entry_enters_exactly_the_fingerprints_of_the_stages_it_names(option):
    base = QAConfig(trace=True, methods=("naive_entropy",))
    changed = dataclasses.replace(base, **{option.name: _other(option)})
    for mc in (False, True):
        before = {s: c.options for s, c in stage_configs(
            base, stagerules.make_baselines(base), multiple_choice=mc).items()}
        after = {s: c.options for s, c in stage_configs(
            changed, stagerules.make_baselines(changed), multiple_choice=mc).items()}
        named = set(option.stages) | ({"generate"} if mc and "mc-generate" in option.stages
                                      else set())
        for s in STAGES:
            if s not in before or s not in after:
                continue
            assert (before[s] != after[s]) == (s in named), (option.name, s, mc)
            if s in named:
                assert after[s][option.name] == getattr(changed, option.name)


def test_mc1_generate_scores_with_the_runs_norm_method(lm, tmp_path, monkeypatch):
    """The MC1 generate stage computes the score stage's gradient terms: it must pass the run's
    norm method to score_choices, and the method enters its fingerprint."""
    path = tmp_path / "mc.jsonl"
    path.write_text("".join(json.dumps({"question": f"Pick {i}?", "choices": ["yes", "no"],
                                        "label": i % 2}) + "\n" for i in range(3)))
    seen, real = [], isograd.lm.score_choices

    def spy(*args, **kwargs):
        seen.append(kwargs.get("method"))
        return real(*args, **kwargs)

    monkeypatch.setattr(isograd.lm, "score_choices", spy)
    run_qa(tmp_path / "run", dataset=str(path), loaded=lm, methods=(), norm_method="loop",
           stage="generate", progress=False)
    assert seen and set(seen) == {"loop"}
    recorded = json.loads((tmp_path / "run" / "generate.config.json").read_text())
    assert recorded["options"]["norm_method"] == "loop"
    # at the value runs made before the fix used, the fingerprint is theirs
    assert "norm_method" not in _fingerprints(QAConfig(), multiple_choice=True)["generate"]
    assert "norm_method" not in _fingerprints(QAConfig(norm_method="loop"))["generate"]


def test_a_default_changed_later_never_resumes_the_old_rows(tmp_path, monkeypatch):
    """Rows written under one default are refused once the default changes: the option enters
    the fingerprint at any value but the one older runs used (its `legacy`)."""
    old = stage_configs(QAConfig(), {})
    for c in old.values():
        open_stage(tmp_path, c)
    # the signal options stay out at their legacy values: runs made before they existed resume
    assert "last_layers" not in old["score"].options and "layer_scale" not in old["score"].options
    for name, new_default in (("last_layers", 7), ("layer_scale", "fan-in")):
        changed = QA.with_(**{name: {"default": new_default}})
        monkeypatch.setattr(stagerules, "QA", changed)
        cfg = changed.config_class("QAConfig")()
        new = stage_configs(cfg, {})
        assert new["score"].options[name] == new_default
        with pytest.raises(RunMismatchError, match=rf"score stage .*{name}: None -> "):
            open_stage(tmp_path, new["score"])
        open_stage(tmp_path, new["generate"])  # the other stages are untouched


def test_score_rows_of_an_older_default_are_refused(lm, model_dir, tmp_path, monkeypatch):
    """`isograd score`'s rows record their options; a row lacking one was made at its legacy
    value, so a changed default refuses it instead of appending rows of another meaning."""
    import isograd.qa.score_pairs as sp

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"Q{i}?", "answer": " yes"}) + "\n"
                             for i in range(2)))
    out = tmp_path / "scored.jsonl"
    assert score_file(pairs, out, model=str(model_dir), loaded=lm, progress=False) == 2
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    # rows of a version before last_layers existed: the key is absent
    out.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "last_layers"}) + "\n"
                           for r in rows[:1]))
    assert score_file(pairs, out, model=str(model_dir), loaded=lm, progress=False) == 1
    assert [r["id"] for r in map(json.loads, out.read_text().splitlines())] == [
        r["id"] for r in rows]
    monkeypatch.setattr(sp, "SCORE", SCORE.with_(last_layers={"default": 3}))
    before = out.read_bytes()
    with pytest.raises(RunMismatchError, match="last_layers=5"):
        sp.score_file(pairs, out, model=str(model_dir), loaded=lm, progress=False)
    assert out.read_bytes() == before


def test_unknown_keyword_and_bad_values_fail_before_any_work(tmp_path):
    with pytest.raises(TypeError, match="bogus"):
        run_qa(tmp_path / "r", bogus=1)
    with pytest.raises(ValueError, match="last_layers must be >= 1"):
        run_qa(tmp_path / "r", last_layers=0)
    with pytest.raises(ValueError, match="prediction: unknown"):
        score_file(tmp_path / "in.jsonl", tmp_path / "o.jsonl", prediction="mean")
    assert not (tmp_path / "r").exists()
