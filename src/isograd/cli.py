"""The `isograd` command line: a thin typer app; each command calls one core function.

Heavy imports (transformers, jax) happen inside the commands so `isograd --help` is fast.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Per-prediction uncertainty from gradient norms (arXiv 2603.29466).",
)


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
        torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; e.g. cpu, cuda, cuda:1, mps") from None


@app.callback()
def _root() -> None:
    """Per-prediction uncertainty from gradient norms (arXiv 2603.29466)."""


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


@app.command()
def qa(
    model: str = typer.Option("smollm2-135m", help="Model: 'smollm2-135m', a hub id or a local path."),
    dataset: str = typer.Option(..., help="truthfulqa-gen | truthfulqa-mc1 | triviaqa | "
                                "triviaqa-150 | nq-open, or the path of your own .jsonl/.csv "
                                "(question + answers/answer, or question + choices + label)."),
    out: str = typer.Option(..., help="Output directory (scores.jsonl, metrics.json, report.md, roc.png)."),
    data: str = typer.Option(None, help="Another copy of a registered dataset: a file or folder "
                             "(default: $ISOGRAD_DATA, else the packaged copy)."),
    limit: int = typer.Option(None, help="Only the first N questions (file order)."),
    methods: str = typer.Option("all", help="Comma-separated baselines, 'all' or 'none'."),
    prediction: str = typer.Option("geometric", help="p of an answer: geometric | sequence | first_token."),
    prompt: str = typer.Option("short", help="Prompt style: short | plain | fewshot."),
    alternatives: bool = typer.Option(True, help="Also record the other two predictions of p."),
    seed: int = typer.Option(0, help="Seed of sampling and bootstrap."),
    max_new_tokens: int = typer.Option(24, help="Cap on answer tokens (greedy and samples)."),
    k: int = typer.Option(5, help="Samples per question for the sampling baselines."),
    temperature: float = typer.Option(1.0, help="Sampling temperature."),
    dtype: str = typer.Option("fp32", help=DTYPE_HELP),
    device: str = typer.Option("cpu", help="Torch device (cpu, cuda, cuda:1, ...)."),
    device_map: str = typer.Option(None, help=DEVICE_MAP_HELP),
    revision: str = typer.Option(None, help="Hub revision (branch, tag or commit) of --model."),
    attn_implementation: str = typer.Option(None, help=ATTN_HELP),
    trust_remote_code: bool = typer.Option(False, help="Allow model code from the hub."),
    norm_method: str = typer.Option("auto", help="Gradient-norm engine: auto | loop | ghost."),
    judge: str = typer.Option("auto", help="Grading rule (see isograd.qa.grading.Judge)."),
    option: list[str] = typer.Option(None, help="Baseline option METHOD.KEY=VALUE (repeatable), "
                                     "e.g. semantic_entropy.entailment=embedding."),
    threads: int = typer.Option(None, help="Torch CPU threads (1 is fastest on a shared machine)."),
    quiet: bool = typer.Option(False, help="No progress bar and no table."),
) -> None:
    """Answer, grade and score a QA dataset; write scores.jsonl (resumable) and the report."""
    import shlex
    import sys

    from .qa.pipeline import ALL_METHODS, RunMismatchError, parse_options, print_table, run_qa

    names = (list(ALL_METHODS) if methods == "all" else [] if methods == "none"
             else [m.strip() for m in methods.split(",") if m.strip()])
    command = "isograd " + shlex.join(sys.argv[1:])
    try:
        load = _load_options(dtype, device, device_map, revision, attn_implementation,
                             trust_remote_code)
        metrics = run_qa(out, model=model, dataset=dataset, data=data, limit=limit, methods=names,
                         prediction=prediction, prompt=prompt, alternatives=alternatives,
                         seed=seed,
                         max_new_tokens=max_new_tokens, k=k, temperature=temperature,
                         dtype=dtype, device=device, load_options=load,
                         norm_method=norm_method, judge=judge,
                         baseline_options=parse_options(option or []),
                         progress=not quiet, command=command, threads=threads)
    except (RunMismatchError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    if not quiet:
        print_table(metrics)


@app.command()
def score(
    input: str = typer.Option(..., help="JSONL of {prompt, answer, optional id}."),
    out: str = typer.Option(..., help="Output JSONL (appended; rerun resumes)."),
    model: str = typer.Option("smollm2-135m", help="Model: 'smollm2-135m', a hub id or a local path."),
    prediction: str = typer.Option("geometric", help="geometric | sequence | first_token."),
    as_question: bool = typer.Option(False, help="'prompt' is a bare question: wrap it in the QA prompt."),
    prompt: str = typer.Option("short", help="With --as-question: prompt style short | plain | fewshot."),
    norm_method: str = typer.Option("auto", help="Gradient-norm engine: auto | loop | ghost."),
    batch_size: int = typer.Option(8, help="Pairs per forward pass."),
    dtype: str = typer.Option("fp32", help=DTYPE_HELP),
    device: str = typer.Option("cpu", help="Torch device (cpu, cuda, cuda:1, ...)."),
    device_map: str = typer.Option(None, help=DEVICE_MAP_HELP),
    revision: str = typer.Option(None, help="Hub revision (branch, tag or commit) of --model."),
    attn_implementation: str = typer.Option(None, help=ATTN_HELP),
    trust_remote_code: bool = typer.Option(False, help="Allow model code from the hub."),
    threads: int = typer.Option(None, help="Torch CPU threads (1 is fastest on a shared machine)."),
    quiet: bool = typer.Option(False, help="No progress bar."),
) -> None:
    """Score (prompt, answer) pairs generated elsewhere: p, epistemic, aleatoric per line."""
    from .qa.pipeline import RunMismatchError, score_file

    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        load = _load_options(dtype, device, device_map, revision, attn_implementation,
                             trust_remote_code)
        n = score_file(input, out, model=model, prediction=prediction, as_question=as_question,
                       prompt=prompt,
                       norm_method=norm_method, batch_size=batch_size, dtype=dtype,
                       device=device, load_options=load, progress=not quiet)
    except (RunMismatchError, ValueError, FileNotFoundError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    if not quiet:
        typer.echo(f"scored {n} pair(s) into {out}")


@app.command()
def validate(
    out: str = typer.Option(..., help="Output directory (agreement.json, table.md, trend.png, maps/)."),
    problems: list[str] = typer.Option(None, help="Problems (repeat or comma-separate); default all 8."),
    widths: list[int] = typer.Option(None, help="Hidden widths (repeat the option); default 4..128."),
    depths: list[int] = typer.Option(None, help="Hidden layers (repeat the option); default 1 and 2."),
    quick: bool = typer.Option(False, help="CI size: width 8, depth 1, short chains (<= 3 min)."),
    chains: int = typer.Option(None, help="NUTS chains (default 4; quick 2)."),
    warmup: int = typer.Option(None, help="NUTS warm-up draws per chain."),
    samples: int = typer.Option(None, help="NUTS kept draws per chain."),
    seed: int = typer.Option(0, help="Seed of data, MAP initialisation and chains."),
    sigma_p: float = typer.Option(None, help="Prior standard deviation σ_p of every weight."),
    study: str = typer.Option("agreement", help="agreement (Table 1) | covariance (which Σ in "
                              "gᵀΣg; covariance.json, covariance.md, spectra.png, maps/)."),
) -> None:
    """Agreement of GN / Laplace / aleatoric with an MCMC reference (paper §4.1, Table 1)."""
    import shlex

    from .validate.study import Study, run_study, study_config

    try:
        kind = Study.parse(study)
    except ValueError as e:
        typer.echo(f"error: --study: {e}", err=True)
        raise typer.Exit(2) from None
    names = [n for p in problems or [] for n in p.split(",") if n]
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
