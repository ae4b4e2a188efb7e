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


@app.callback()
def _root() -> None:
    """Per-prediction uncertainty from gradient norms (arXiv 2603.29466)."""


@app.command()
def demo() -> None:
    """The main job on the embedded default (see README)."""
    from .demo import run_demo

    run_demo()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
