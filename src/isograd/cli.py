"""The `isograd` command line: a thin typer app; each command calls one core function.

Heavy imports (transformers, jax) happen inside the commands so `isograd --help` is fast.
Bad input never ends in a traceback: option values are checked while parsing (callbacks) or
first thing in a command (the load flags), before any output file is touched; every command
body turns the input errors of the core functions (`INPUT_ERRORS`) into one line on stderr and
exit status 2 (`_one_line_errors`), and `main` does the same for usage errors (unknown or
missing options, bad values). ``ISOGRAD_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Per-prediction uncertainty from gradient norms (arXiv 2603.29466).",
)

INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)
"""What the core functions raise on bad input: ValueError (incl. DatasetError, RunMismatchError,
unknown option values, malformed JSON, non-UTF-8 text) and OSError (missing or unreadable
files, a non-writable --out, a folder that is not a model)."""

EMBEDDED_MODELS = ("smollm2-135m",)

# click's error classes, wherever this typer takes click from (its own copy since typer 0.22)
_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
_CLICK_EXCEPTION = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


@app.callback()
def _root() -> None:
    """Per-prediction uncertainty from gradient norms (arXiv 2603.29466)."""


# ------------------------------------------------------------------ option checks at parse time


def _choice(load: Callable[[], Any]) -> Callable[[str | None], str | None]:
    """A typer callback: the value must be a member of the `Choice` Enum that `load` returns."""

    def check(value: str | None) -> str | None:
        if value is not None:
            try:
                load().parse(value)
            except ValueError as e:
                raise typer.BadParameter(str(e)) from None
        return value

    return check


def _prediction():
    from .lm.score import Prediction

    return Prediction


def _prompt_style():
    from .lm.prompts import PromptStyle

    return PromptStyle


def _norm_method():
    from .norms.api import Method

    return Method


def _shard():
    from .distributed import Shard

    return Shard


def _judge():
    from .qa.grading import Judge

    return Judge


# the options of every command that loads a model (names as `isograd.lm.models`' Choices:
# tests/test_cli_load.py holds these help texts to the Enums, so the lists cannot drift)
DTYPE_HELP = "Weights dtype: auto (the checkpoint's own) | fp32 | bf16 | fp16 | fp64."
DEVICE_MAP_HELP = ("Split the model over devices: auto | balanced | balanced_low_0 | sequential, "
                   "or a JSON object {module: device}.")
ATTN_HELP = "Attention kernel: eager | sdpa | flash_attention_2 | flash_attention_3 | flex_attention."


def _load_options(dtype: str, device: str, device_map: str | None, revision: str | None,
                  attn_implementation: str | None, trust_remote_code: bool) -> dict:
    """Check the load flags before any work (ValueError naming the flag) and return the
    `load_model` options beyond dtype and device."""
    from .lm.models import AttnImplementation, parse_device_map, parse_dtype

    def named(flag: str, fn, value):
        try:
            return fn(value)
        except ValueError as e:
            raise ValueError(f"--{flag}: {e}") from None

    named("dtype", parse_dtype, dtype)
    named("device", _check_device, device)
    opts: dict = {"trust_remote_code": trust_remote_code}
    if device_map is not None:
        opts["device_map"] = named("device-map", parse_device_map, device_map)
    if revision is not None:
        opts["revision"] = revision
    if attn_implementation is not None:
        opts["attn_implementation"] = named("attn-implementation", AttnImplementation.parse,
                                            attn_implementation).value
    return opts


def _check_device(device: str) -> None:
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; e.g. cpu, cuda, cuda:1, mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{device!r}: CUDA is not available on this machine")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{device!r}: MPS is not available on this machine")


def _one_line_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """A command body whose input errors (`INPUT_ERRORS`) end as one line and exit status 2."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except INPUT_ERRORS as e:
            if _debug():
                raise
            _fail(str(e) if str(e) else type(e).__name__)

    return run


def _debug() -> bool:
    return os.environ.get("ISOGRAD_DEBUG", "").strip() not in ("", "0")


_MODEL_FILES = (("config.json", ("config.json",)),
                ("weights (*.safetensors, *.bin)", ("*.safetensors", "*.bin")),
                ("tokenizer files", ("tokenizer.json", "tokenizer_config.json", "tokenizer.model",
                                     "vocab.json")))


def _model(value: str) -> str:
    """The embedded name, a hub id, or a local model folder (one holding config.json)."""
    if value in EMBEDDED_MODELS:
        return value
    p = Path(value).expanduser()
    if p.exists():
        if not p.is_dir():
            raise typer.BadParameter(f"{value} is a file, not a model folder")
        missing = [what for what, globs in _MODEL_FILES if not any(any(p.glob(g)) for g in globs)]
        if missing:
            raise typer.BadParameter(f"{value} is not a model folder: no {', no '.join(missing)}")
    elif value.startswith((".", "/", "~")) or value.count("/") > 1:
        raise typer.BadParameter(f"no model folder {value} (a hub id looks like 'org/name')")
    elif os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("", "0", "false", "no", "off"):
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(value, "config.json"), str):
            raise typer.BadParameter(f"{value} is neither a local folder nor in the Hugging Face "
                                     "cache, and the hub is offline (HF_HUB_OFFLINE=1; `make "
                                     "OFFLINE=0` or unsetting it allows the download)")
    return value


def _dataset(value: str) -> str:
    """A registered dataset id, or an existing user file."""
    from .qa.datasets import DATASETS, is_user_dataset

    if value in DATASETS:
        return value
    if not is_user_dataset(value):
        raise typer.BadParameter(f"unknown dataset {value!r}; choose one of "
                                 f"{', '.join(DATASETS)}, or the path of your own .jsonl or "
                                 ".csv file")
    if not Path(value).expanduser().is_file():
        raise typer.BadParameter(f"no dataset file {value}")
    return value


def _method_names(value: str) -> list[str]:
    """``all`` | ``none`` | a comma-separated list of baselines, checked against ALL_METHODS."""
    from .qa.runfiles import ALL_METHODS

    names = (list(ALL_METHODS) if value == "all" else [] if value == "none"
             else [m.strip() for m in value.split(",") if m.strip()])
    unknown = [m for m in names if m not in ALL_METHODS]
    if unknown:
        raise typer.BadParameter(f"unknown method(s) {', '.join(map(repr, unknown))}; allowed: "
                                 f"'all', 'none' or a comma-separated list of {', '.join(ALL_METHODS)}")
    return names


def _methods(value: str) -> str:
    _method_names(value)  # raises BadParameter on an unknown name
    return value


def _problems(values: Sequence[str] | None) -> list[str]:
    from .validate.problems import PROBLEMS

    names = [n for v in values or [] for n in v.split(",") if n]
    unknown = [n for n in names if n not in PROBLEMS]
    if unknown:
        raise typer.BadParameter(f"unknown problem(s) {', '.join(map(repr, unknown))}; allowed: "
                                 f"{', '.join(PROBLEMS)}")
    return names


def _writable(value: str, *, folder: bool) -> str:
    """`value` can be written as a file (folder=False) or a folder: checked before any work."""
    p = Path(value).expanduser()
    if p.exists() and p.is_dir() != folder:
        raise typer.BadParameter(f"{value} is a {'file' if folder else 'folder'}; expected a "
                                 f"{'folder' if folder else 'file'}")
    if p.exists():
        if not os.access(p, os.W_OK):
            raise typer.BadParameter(f"{value} is not writable")
        return value
    parent = p.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise typer.BadParameter(f"{value} cannot be created: {parent} is a file")
    if not os.access(parent, os.W_OK):
        raise typer.BadParameter(f"{value} cannot be created: {parent} is not writable")
    return value


def _optional(check: Callable[[str], str]) -> Callable[[str | None], str | None]:
    """An option callback that lets an absent value (None) through unchecked."""
    return lambda value: None if value is None else check(value)


def _out_dir(value: str) -> str:
    return _writable(value, folder=True)


def _out_file(value: str) -> str:
    return _writable(value, folder=False)


def _positive(value: float | None) -> float | None:
    if value is not None and not value > 0:
        raise typer.BadParameter(f"must be > 0, got {value}")
    return value


@app.command()
def demo(
    out: str = typer.Option("runs/demo", help="Output directory of the QA run."),
    threads: int = typer.Option(None, help="Torch CPU threads."),
    synthetic: bool = typer.Option(False, help="Instead: estimate() on a synthetic two-blob MLP."),
) -> None:
    """The main job on the embedded default: `isograd qa` on 20 TruthfulQA questions."""
    import shlex
    import sys

    from .demo import run_qa_demo, run_synthetic

    if synthetic:
        run_synthetic()
        return
    from .qa.pipeline import print_table

    print_table(run_qa_demo(out, threads=threads, command="isograd " + shlex.join(sys.argv[1:])))


_MODEL_HELP = "Model: 'smollm2-135m', a hub id or a local folder."


@app.command()
@_one_line_errors
def qa(
    model: str = typer.Option("smollm2-135m", help=_MODEL_HELP, callback=_model),
    dataset: str = typer.Option(None, help="truthfulqa-gen | truthfulqa-mc1 | triviaqa | "
                                "triviaqa-150 | nq-open, or the path of your own .jsonl/.csv "
                                "(question + answers/answer, or question + choices + label).",
                                callback=_optional(_dataset)),
    out: str = typer.Option(None, help="Output directory (one JSONL per stage, metrics.json, "
                            "report.md, roc.png, scores.jsonl).", callback=_optional(_out_dir)),
    data: str = typer.Option(None, help="Another copy of a registered dataset: a file or folder "
                             "(default: $ISOGRAD_DATA, else the packaged copy)."),
    limit: int = typer.Option(None, min=1, help="Only the first N questions (file order)."),
    methods: str = typer.Option("all", help="Comma-separated baselines, 'all' or 'none'.",
                                callback=_methods),
    prediction: str = typer.Option("geometric", help="p of an answer: geometric | sequence | first_token.",
                                   callback=_choice(_prediction)),
    prompt: str = typer.Option("short", help="Prompt style: short | plain | fewshot.",
                               callback=_choice(_prompt_style)),
    alternatives: bool = typer.Option(True, help="Also record the other two predictions of p."),
    seed: int = typer.Option(0, help="Seed of sampling and bootstrap."),
    max_new_tokens: int = typer.Option(24, min=1, help="Cap on answer tokens (greedy and samples)."),
    k: int = typer.Option(5, min=1, help="Samples per question for the sampling baselines."),
    temperature: float = typer.Option(1.0, help="Sampling temperature.", callback=_positive),
    dtype: str = typer.Option("fp32", help=DTYPE_HELP),
    device: str = typer.Option("cpu", help="Torch device (cpu, cuda, cuda:1, ...); under "
                               "torchrun 'cuda' is cuda:LOCAL_RANK."),
    device_map: str = typer.Option(None, help=DEVICE_MAP_HELP),
    revision: str = typer.Option(None, help="Hub revision (branch, tag or commit) of --model."),
    attn_implementation: str = typer.Option(None, help=ATTN_HELP),
    trust_remote_code: bool = typer.Option(False, help="Allow model code from the hub."),
    norm_method: str = typer.Option("auto", help="Gradient-norm engine: auto | loop | ghost.",
                                    callback=_choice(_norm_method)),
    judge: str = typer.Option("auto", help="Grading rule (see isograd.qa.grading.Judge).",
                              callback=_choice(_judge)),
    trace: bool = typer.Option(False, help="Also score every answer token (the trace stage: "
                               "methods epistemic_token_max/mean, per-row profiles); ~T times "
                               "the score."),
    layer_scale: str = typer.Option("weight-variance", help="Rule of epistemic_layer_scaled: "
                                    "weight-variance | fan-in."),
    last_layers: int = typer.Option(5, min=1, help="k of epistemic_last_layers (the last k "
                                    "blocks)."),
    option: list[str] = typer.Option(None, help="Baseline option METHOD.KEY=VALUE (repeatable), "
                                     "e.g. semantic_entropy.entailment=embedding."),
    stage: str = typer.Option("all", help="Run one stage: all | generate | grade | score | "
                              "trace | baselines | evaluate."),
    force_stage: str = typer.Option(None, help="Comma-separated stages to redo (with what reads "
                                    "them): generate | grade | score | trace | samples | "
                                    "baselines | a baseline's name."),
    batch_size: int = typer.Option(1, min=1, help="Questions per generation batch and per "
                                   "forward+backward of the score stage."),
    subset: int = typer.Option(None, min=1, help="Run the costly stages (trace, samples, "
                               "baselines) on the first N questions only; each method is "
                               "evaluated on the questions that have it."),
    trace_subset: int = typer.Option(None, min=1, help="The trace stage's own --subset (it "
                                     "costs ~T times the score); needs --trace."),
    convert: str = typer.Option(None, help="Convert DIR, a run of the earlier single-file "
                                "format (scores.jsonl), into stage files and evaluate it."),
    threads: int = typer.Option(None, min=1, help="Torch CPU threads (1 is fastest on a shared machine)."),
    quiet: bool = typer.Option(False, help="No progress bar and no table."),
) -> None:
    """Answer, grade and score a QA dataset in stages (each resumable) and write the report."""
    import shlex

    from .qa.pipeline import convert_run, parse_options, print_table, run_qa

    if convert:
        metrics = convert_run(convert)
        if not quiet:
            print_table(metrics)
        return
    if not dataset or not out:
        raise typer.BadParameter("is required (unless --convert DIR)",
                                 param_hint="'--dataset'" if not dataset else "'--out'")
    names = _method_names(methods)
    try:
        options = parse_options(option or [])
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="'--option'") from None
    unused = sorted(set(options) - set(names))
    if unused:
        raise typer.BadParameter(f"options for {', '.join(unused)}, which --methods {methods!r} "
                                 "does not run", param_hint="'--option'")
    load = _load_options(dtype, device, device_map, revision, attn_implementation,
                         trust_remote_code)
    command = "isograd " + shlex.join(sys.argv[1:])
    metrics = run_qa(out, model=model, dataset=dataset, data=data, limit=limit, methods=names,
                     prediction=prediction, prompt=prompt, alternatives=alternatives,
                     seed=seed, max_new_tokens=max_new_tokens, k=k, temperature=temperature,
                     dtype=dtype, device=device, load_options=load, norm_method=norm_method,
                     judge=judge, trace=trace, layer_scale=layer_scale,
                     last_layers=last_layers, baseline_options=options, stage=stage,
                     force_stages=[s.strip() for s in (force_stage or "").split(",") if s.strip()],
                     batch_size=batch_size, subset=subset, trace_subset=trace_subset,
                     progress=not quiet,
                     command=command, threads=threads)
    if quiet:
        return
    if metrics is None and stage != "all":  # one stage alone: no report yet
        typer.echo(f"stage {stage} done in {out}; `--stage evaluate` (or the full command) "
                   "writes the report")
    elif metrics is not None:  # rank 0 of a torchrun job prints the table
        print_table(metrics)


@app.command()
@_one_line_errors
def score(
    input: str = typer.Option(..., help="JSONL of {prompt, answer, optional id}."),
    out: str = typer.Option(..., help="Output JSONL (appended; rerun resumes).", callback=_out_file),
    model: str = typer.Option("smollm2-135m", help=_MODEL_HELP, callback=_model),
    prediction: str = typer.Option("geometric", help="geometric | sequence | first_token.",
                                   callback=_choice(_prediction)),
    as_question: bool = typer.Option(False, help="'prompt' is a bare question: wrap it in the QA prompt."),
    prompt: str = typer.Option(None, help="With --as-question: prompt style short (default) | "
                               "plain | fewshot.", callback=_choice(_prompt_style)),
    norm_method: str = typer.Option("auto", help="Gradient-norm engine: auto | loop | ghost.",
                                    callback=_choice(_norm_method)),
    batch_size: int = typer.Option(8, min=1, help="Pairs per forward pass."),
    trace: bool = typer.Option(False, help="Also write each answer's per-token profile "
                               "(token_epistemic, token_aleatoric); ~T times the score."),
    covariance: str = typer.Option("isotropic", help="Which term is 'epistemic': isotropic | "
                                   "layer-scaled (both are always written)."),
    layer_scale: str = typer.Option("weight-variance", help="Rule of the layer-scaled term: "
                                    "weight-variance | fan-in."),
    last_layers: int = typer.Option(5, min=1, help="k of epistemic_last_layers (the last k "
                                    "blocks)."),
    dtype: str = typer.Option("fp32", help=DTYPE_HELP),
    device: str = typer.Option("cpu", help="Torch device (cpu, cuda, cuda:1, ...); under "
                               "torchrun 'cuda' is cuda:LOCAL_RANK."),
    device_map: str = typer.Option(None, help=DEVICE_MAP_HELP),
    shard: str = typer.Option("none", help="Under torchrun: none (a model copy per rank) | "
                              "fsdp (FSDP2: the weights split across the ranks).",
                              callback=_choice(_shard)),
    revision: str = typer.Option(None, help="Hub revision (branch, tag or commit) of --model."),
    attn_implementation: str = typer.Option(None, help=ATTN_HELP),
    trust_remote_code: bool = typer.Option(False, help="Allow model code from the hub."),
    threads: int = typer.Option(None, min=1, help="Torch CPU threads (1 is fastest on a shared machine)."),
    quiet: bool = typer.Option(False, help="No progress bar."),
) -> None:
    """Score (prompt, answer) pairs generated elsewhere: p, epistemic, aleatoric per line.

    Data-parallel: torchrun --nproc-per-node N --no-python isograd score ... (see the README).
    """
    from .distributed import launched
    from .qa.pipeline import score_file

    if prompt is not None and not as_question:
        raise typer.BadParameter("a prompt style applies only with --as-question (the "
                                 "prompts of --input are used verbatim)", param_hint="'--prompt'")
    if Path(input).expanduser().resolve() == Path(out).expanduser().resolve():
        raise typer.BadParameter("--out is the --input file: rows would be appended to the "
                                 "pairs", param_hint="'--out'")
    load = _load_options(dtype, device, device_map, revision, attn_implementation,
                         trust_remote_code)
    if threads:
        import torch

        torch.set_num_threads(threads)
    n = score_file(input, out, model=model, prediction=prediction, as_question=as_question,
                   prompt=prompt or "short", norm_method=norm_method, batch_size=batch_size,
                   dtype=dtype, device=device, load_options=load, shard=shard,
                   progress=not quiet, trace=trace, covariance=covariance,
                   layer_scale=layer_scale, last_layers=last_layers)
    if not quiet and int(os.environ.get("RANK", "0")) == 0:
        where = f" by {os.environ['WORLD_SIZE']} processes" if launched() else ""
        typer.echo(f"scored {n} pair(s) into {out}{where}")


@app.command()
@_one_line_errors
def validate(
    out: str = typer.Option(..., help="Output directory (agreement.json, table.md, trend.png, maps/).",
                            callback=_out_dir),
    problems: list[str] = typer.Option(None, help="Problems (repeat or comma-separate); default all 8.",
                                       callback=_problems),
    widths: list[int] = typer.Option(None, min=1, help="Hidden widths (repeat the option); default 4..128."),
    depths: list[int] = typer.Option(None, min=1, help="Hidden layers (repeat the option); default 1 and 2."),
    quick: bool = typer.Option(False, help="CI size: width 8, depth 1, short chains (<= 3 min)."),
    chains: int = typer.Option(None, min=1, help="NUTS chains (default 4; quick 2)."),
    warmup: int = typer.Option(None, min=1, help="NUTS warm-up draws per chain."),
    samples: int = typer.Option(None, min=1, help="NUTS kept draws per chain."),
    seed: int = typer.Option(0, help="Seed of data, MAP initialisation and chains."),
    sigma_p: float = typer.Option(None, help="Prior standard deviation σ_p of every weight.",
                                  callback=_positive),
    study: str = typer.Option("agreement", help="agreement (Table 1) | covariance (which Σ in "
                              "gᵀΣg; covariance.json, covariance.md, spectra.png, maps/)."),
) -> None:
    """Agreement of GN / Laplace / aleatoric with an MCMC reference (paper §4.1, Table 1)."""
    import shlex

    from .validate.study import Study, run_study, study_config

    try:
        kind = Study.parse(study)
    except ValueError as e:
        raise ValueError(f"--study: {e}") from None
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
        from .validate.covstudy import run_covariance_study

        run_covariance_study(out, cfg, command=shlex.join(cmd + ["--out", out]))
        return
    run_study(out, cfg, command=shlex.join(cmd + ["--out", out]))


# ------------------------------------------------------------------ serve (one block: port it
# onto the option spec as it is)


@app.command()
@_one_line_errors
def serve(
    model: str = typer.Option("smollm2-135m", help=_MODEL_HELP, callback=_model),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (127.0.0.1: this machine "
                             "only)."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port to listen on."),
    detector: str = typer.Option(None, help="Detector file (isograd.detect): adds p_error and "
                                 "abstain to every answer."),
    max_batch_size: int = typer.Option(8, min=1, help="Requests per generation batch and score "
                                       "pass."),
    max_wait_ms: float = typer.Option(10.0, min=0, help="How long a batch waits for more "
                                      "requests (ms)."),
    queue_size: int = typer.Option(64, min=1, help="Requests waiting at most; more get 429."),
    request_timeout: float = typer.Option(300.0, help="Seconds before a request is answered "
                                          "503.", callback=_positive),
    max_tokens: int = typer.Option(256, min=1, help="Largest max_tokens a request may ask."),
    api_key: str = typer.Option(None, envvar="ISOGRAD_API_KEY", show_default=False,
                                help="Require 'Authorization: Bearer KEY' (or set "
                                "ISOGRAD_API_KEY)."),
    dtype: str = typer.Option("fp32", help=DTYPE_HELP),
    device: str = typer.Option("cpu", help="Torch device (cpu, cuda, cuda:1, ...)."),
    device_map: str = typer.Option(None, help=DEVICE_MAP_HELP),
    revision: str = typer.Option(None, help="Hub revision (branch, tag or commit) of --model."),
    attn_implementation: str = typer.Option(None, help=ATTN_HELP),
    trust_remote_code: bool = typer.Option(False, help="Allow model code from the hub."),
    threads: int = typer.Option(None, min=1, help="Torch CPU threads."),
) -> None:
    """Serve the model over HTTP (OpenAI API); every answer carries its uncertainty."""
    if detector is not None and not Path(detector).expanduser().is_file():
        raise typer.BadParameter(f"no detector file {detector}", param_hint="'--detector'")
    load = _load_options(dtype, device, device_map, revision, attn_implementation,
                         trust_remote_code)
    try:
        from .serve import run
    except ImportError as e:
        raise ValueError(f"isograd serve needs the serve extra ({e.name} is missing): "
                         "pip install 'isograd[serve]'") from None
    run(model, host=host, port=port, detector=detector, max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms, queue_size=queue_size, request_timeout_s=request_timeout,
        max_tokens_cap=max_tokens, api_key=api_key, threads=threads, dtype=dtype,
        device=device, **load)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _warning_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    sys.stderr.write(f"warning: {_one_line(str(message))}\n")


def _fail(message: str) -> None:
    sys.stderr.write(f"error: {_one_line(message)}\n")
    sys.stderr.flush()
    sys.exit(2)


def main(argv: Sequence[str] | None = None) -> None:
    """The `isograd` entry point: bad input ends with one line on stderr and exit status 2.

    Args:
        argv: the arguments after the program name (None: ``sys.argv[1:]``).
    """
    debug = _debug()
    shown = warnings.showwarning
    if not debug:  # a warning is one line too ("warning: ..."), not file:line plus source
        warnings.showwarning = _warning_line
    try:
        code = app(args=list(argv) if argv is not None else None, prog_name="isograd",
                   standalone_mode=False)
    except _USAGE_ERROR as e:  # unknown or missing options, bad values, conflicts
        if type(e).__name__ == "NoArgsIsHelpError":  # `isograd` alone: the help, as click shows it
            e.show()
            sys.exit(2)
        hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
        _fail(e.format_message() + hint)
    except _CLICK_EXCEPTION as e:
        _fail(e.format_message())
    except typer.Abort:
        _fail("aborted")
    except INPUT_ERRORS as e:
        if debug:
            raise
        _fail(str(e) if str(e) else type(e).__name__)
    finally:
        warnings.showwarning = shown
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
