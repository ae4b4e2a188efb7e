"""The `isograd` command line: a thin typer app; each command calls one core function.

The options of ``isograd qa`` and ``isograd score`` are made from their one declaration
(`isograd.qa.options`); heavy imports (transformers, jax) happen inside the commands so
`isograd --help` is fast. Bad input never ends in a traceback: option values are checked while
parsing (callbacks, `isograd.cli.checks`) or first thing in a command (the load flags), before
any output file is touched; every command body turns the input errors of the core functions
(`INPUT_ERRORS`) into one line on stderr and exit status 2 (`one_line_errors`), and `main` does
the same for usage errors (unknown or missing options, bad values). ``ISOGRAD_DEBUG=1`` shows the
traceback instead.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import typer

from ..options import Option, Options
from .checks import (
    INPUT_ERRORS,
    debug,
    fail,
    in_file,
    model_name,
    one_line_errors,
    optional,
    out_dir,
    out_file,
    positive,
    problem_names,
    warning_line,
)
from .quiet import quieted

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Per-prediction uncertainty from gradient norms (arXiv 2603.29466).",
)

# click's error classes, wherever this typer takes click from (its own copy since typer 0.22)
_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
_CLICK_EXCEPTION = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"isograd {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", help="Print the version and exit.",
                                       is_eager=True, callback=_version)) -> None:
    """Per-prediction uncertainty from gradient norms (arXiv 2603.29466)."""


def choice(load: Callable[[], Any]) -> Callable[[str | None], str | None]:
    """A typer callback: the value must be a member of the `Choice` Enum that `load` returns."""

    def check(value: str | None) -> str | None:
        if value is not None:
            try:
                load().parse(value)
            except ValueError as e:
                raise typer.BadParameter(str(e)) from None
        return value

    return check


def _study():
    from ..validate.study import Study

    return Study


QUIET = Option("quiet", False, "No progress bars (the model's loading too), no library "
               "warnings and no table.", type=bool)
CALLBACKS = {"model": model_name, "dataset": optional(lambda v: _dataset(v)),
             "temperature": positive}


def _dataset(value: str) -> str:
    from .checks import dataset_name

    return dataset_name(value)


@app.command()
def demo(
    out: str = typer.Option("runs/demo", help="Output directory of the QA run."),
    threads: int = typer.Option(None, help="Torch CPU threads."),
    synthetic: bool = typer.Option(False, help="Instead: estimate() on a synthetic two-blob MLP."),
) -> None:
    """The main job on the embedded default: `isograd qa` on 20 TruthfulQA questions."""
    import shlex
    import sys

    from ..demo import run_qa_demo, run_synthetic

    if synthetic:
        run_synthetic()
        return
    from ..qa.evaluation import print_table

    print_table(run_qa_demo(out, threads=threads, command="isograd " + shlex.join(sys.argv[1:])))


def _qa(*, out: str | None, convert: str | None, quiet: bool, **options: Any) -> None:
    """Answer, grade and score a QA dataset in stages (each resumable) and write the report."""
    import shlex

    from ..lm.options import load_options
    from ..qa.evaluation import print_table
    from ..qa.legacy import convert_run
    from ..qa.pipeline import run_qa

    if convert:
        metrics = convert_run(convert)
        if not quiet:
            print_table(metrics)
        return
    if not options["dataset"] or not out:
        raise typer.BadParameter("is required (unless --convert DIR)",
                                 param_hint="'--dataset'" if not options["dataset"] else "'--out'")
    unused = sorted(set(options["baseline_options"] or {}) - set(options["methods"]))
    if unused:
        raise typer.BadParameter(f"options for {', '.join(unused)}, which --methods does not "
                                 "run", param_hint="'--option'")
    load_options(options)  # the load flags, checked before any work
    options = {k: v for k, v in options.items() if v is not None}
    with quieted(quiet):
        metrics = run_qa(out, **options, progress=not quiet,
                         command="isograd " + shlex.join(sys.argv[1:]))
    det = (metrics or {}).get("detector")
    if det and det["threshold"] is None:  # said even with --quiet: it changes every row
        typer.echo(f"warning: {_no_threshold(options['detector'])}", err=True)
    if quiet:
        return
    stage = options.get("stage", "all")
    if metrics is None and stage != "all":  # one stage alone: no report yet
        typer.echo(f"stage {stage} done in {out}; `--stage evaluate` (or the full command) "
                   "writes the report")
    elif metrics is not None:  # rank 0 of a torchrun job prints the table
        print_table(metrics)


def _score(*, input: str, out: str, quiet: bool, **options: Any) -> None:
    """Score (prompt, answer) pairs generated elsewhere: p, epistemic, aleatoric per line.

    Data-parallel: torchrun --nproc-per-node N --no-python isograd score ... (see the README).
    """
    from pathlib import Path

    from ..lm.options import load_options
    from ..qa.score_pairs import score_file
    from ..rows.ranks import launched

    if options["prompt"] is not None and not options["as_question"]:
        raise typer.BadParameter("a prompt style applies only with --as-question (the "
                                 "prompts of --input are used verbatim)", param_hint="'--prompt'")
    if Path(input).expanduser().resolve() == Path(out).expanduser().resolve():
        raise typer.BadParameter("--out is the --input file: rows would be appended to the "
                                 "pairs", param_hint="'--out'")
    load_options(options)  # the load flags, checked before any work
    options = {k: v for k, v in options.items() if v is not None}
    with quieted(quiet):
        n = score_file(input, out, **options, progress=not quiet)
    if not quiet and int(os.environ.get("RANK", "0")) == 0:
        where = f" by {os.environ['WORLD_SIZE']} processes" if launched() else ""
        typer.echo(f"scored {n} pair(s) into {out}{where}")
    if options.get("detector") and _no_threshold(options["detector"]):
        typer.echo(f"warning: {_no_threshold(options['detector'])}", err=True)


def _no_threshold(path: str) -> str | None:
    """The one line saying a detector file has no threshold (every row abstains), else None."""
    from ..detect import load_detector

    return load_detector(path, allow_model_mismatch=True).abstains_always()


def _fit_detector(*, run_dirs: list[str], out: str, quiet: bool, **options: Any) -> None:
    """Fit a detector of wrong answers on finished `isograd qa` run folders; write its JSON.

    The threshold (answer when P(wrong) <= t) is chosen on the --calibration runs, else on a
    held-back share of the fitting rows (see --calibration), so that the error rate among the answered is at most
    alpha with probability >= 1 - delta (MAPIE learn-then-test).
    """
    from ..qa.detector_rows import fit_runs

    det = fit_runs(run_dirs, out, **{k: v for k, v in options.items() if v is not None})
    t = det.threshold
    if t.threshold is None:
        typer.echo(f"warning: {det.abstains_always()}; wrote {out}", err=True)
    elif not quiet:
        typer.echo(f"wrote {out}: answer when P(wrong) <= {t.threshold:.2f} (on {t.n_calibration}"
                   f" calibration rows: coverage {t.coverage:.2f}, error {t.error:.2f}; alpha "
                   f"{t.alpha:g}, delta {t.delta:g})")


def _serve(*, detector: str | None, **options: Any) -> None:
    """Serve the model over HTTP (OpenAI API); every answer carries its uncertainty."""
    import importlib.util
    from pathlib import Path

    from .. import serve
    from ..lm.options import load_options

    if detector is not None and not Path(detector).expanduser().is_file():
        raise typer.BadParameter(f"no detector file {detector}", param_hint="'--detector'")
    load_options(options)  # the load flags, checked before any work
    missing = [m for m in ("fastapi", "uvicorn", "prometheus_client")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(f"isograd serve needs the serve extra ({', '.join(missing)} missing): "
                         "pip install 'isograd[serve]'")
    serve.run(detector=detector, **options)


def _commands() -> None:
    """Register ``qa``, ``score`` and ``serve``, their options made from their one declaration
    (`isograd.qa.options`, `isograd.serve.options`)."""
    from ..qa.options import QA, SCORE
    from ..serve.options import SERVE

    qa_cli = QA + Options((
        Option("out", None, "Output directory (one JSONL per stage, metrics.json, report.md, "
               "roc.png, scores.jsonl)."),
        Option("convert", None, "Convert DIR, a run of the earlier single-file format "
               "(scores.jsonl), into stage files and evaluate it."),
        QUIET))
    score_cli = Options((
        Option("input", ..., "JSONL of {prompt, answer, optional id}."),
        Option("out", ..., "Output JSONL (appended; rerun resumes)."),
    )) + SCORE + Options((QUIET,))
    app.command(name="qa")(one_line_errors(qa_cli.typer_command(
        _qa, doc=_qa.__doc__ or "", callbacks={**CALLBACKS, "out": optional(out_dir)})))
    app.command(name="score")(one_line_errors(score_cli.typer_command(
        _score, doc=_score.__doc__ or "",
        callbacks={**CALLBACKS, "out": out_file, "input": in_file})))
    app.command(name="serve")(one_line_errors(SERVE.typer_command(
        _serve, doc=_serve.__doc__ or "", callbacks=CALLBACKS)))
    from ..qa.detector_rows import FIT

    app.command(name="fit-detector")(one_line_errors((FIT + Options((QUIET,))).typer_command(
        _fit_detector, doc=_fit_detector.__doc__ or "", callbacks={"out": out_file})))


_commands()


@app.command()
@one_line_errors
def validate(
    out: str = typer.Option(..., help="Output directory (agreement.json, table.md, trend.png, maps/).",
                            callback=out_dir),
    problems: list[str] = typer.Option(None, help="Problems (repeat or comma-separate); default all 8.",
                                       callback=problem_names),
    widths: list[int] = typer.Option(None, min=1, help="Hidden widths (repeat the option); default 4..128."),
    depths: list[int] = typer.Option(None, min=1, help="Hidden layers (repeat the option); default 1 and 2."),
    quick: bool = typer.Option(False, help="CI size: width 8, depth 1, short chains (<= 3 min)."),
    chains: int = typer.Option(None, min=1, help="NUTS chains (default 4; quick 2)."),
    warmup: int = typer.Option(None, min=1, help="NUTS warm-up draws per chain."),
    samples: int = typer.Option(None, min=1, help="NUTS kept draws per chain."),
    seed: int = typer.Option(0, help="Seed of data, MAP initialisation and chains."),
    sigma_p: float = typer.Option(None, help="Prior standard deviation σ_p of every weight.",
                                  callback=positive),
    study: str = typer.Option("agreement", help="agreement (Table 1) | covariance (which Σ in "
                              "gᵀΣg; covariance.json, covariance.md, spectra.png, maps/).",
                              callback=choice(_study)),
) -> None:
    """Agreement of GN / Laplace / aleatoric with an MCMC reference (paper §4.1, Table 1)."""
    import shlex

    from ..validate.study import Study, run_study, study_config

    kind = Study.parse(study)
    names = list(problems or [])
    cfg = study_config(study=kind, quick=quick, problems=names, widths=widths, depths=depths,
                       chains=chains, warmup=warmup, samples=samples, seed=seed, sigma_p=sigma_p)
    # the command as an equivalent argument list (sys.argv is not ours under a test runner)
    given = {"--problems": ",".join(names), "--chains": chains, "--warmup": warmup,
             "--samples": samples, "--sigma-p": sigma_p, "--seed": seed or None}
    cmd = ["isograd", "validate"] + (["--study", kind.value] if kind is Study.COVARIANCE else [])
    cmd += ["--quick"] if quick else []
    cmd += [a for k, v in given.items() if v for a in (k, str(v))]
    cmd += [a for w in widths or [] for a in ("--widths", str(w))]
    cmd += [a for d in depths or [] for a in ("--depths", str(d))]
    if kind is Study.COVARIANCE:
        from ..validate.covstudy import run_covariance_study

        run_covariance_study(out, cfg, command=shlex.join(cmd + ["--out", out]))
        return
    run_study(out, cfg, command=shlex.join(cmd + ["--out", out]))


def main(argv: Sequence[str] | None = None) -> None:
    """The `isograd` entry point: bad input ends with one line on stderr and exit status 2.

    Args:
        argv: the arguments after the program name (None: ``sys.argv[1:]``).
    """
    debugging = debug()
    shown = warnings.showwarning
    if not debugging:  # a warning is one line too ("warning: ..."), not file:line plus source
        warnings.showwarning = warning_line
    try:
        code = app(args=list(argv) if argv is not None else None, prog_name="isograd",
                   standalone_mode=False)
    except _USAGE_ERROR as e:  # unknown or missing options, bad values, conflicts
        if type(e).__name__ == "NoArgsIsHelpError":  # `isograd` alone: the help, as click shows it
            e.show()
            sys.exit(2)
        hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
        fail(e.format_message() + hint)
    except _CLICK_EXCEPTION as e:
        fail(e.format_message())
    except typer.Abort:
        fail("aborted")
    except INPUT_ERRORS as e:
        if debugging:
            raise
        fail(str(e) if str(e) else type(e).__name__)
    finally:
        warnings.showwarning = shown
    sys.exit(code if isinstance(code, int) else 0)

