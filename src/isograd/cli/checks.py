"""The checks of the `isograd` command line: option values checked while parsing (typer
callbacks), and the one way an input error ends (one line on stderr, exit status 2)."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import typer

from ..lm.models import EMBEDDED_MODELS  # the names load_model resolves itself; light

INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)
"""What the core functions raise on bad input: ValueError (incl. DatasetError, RunMismatchError,
unknown option values, malformed JSON, non-UTF-8 text) and OSError (missing or unreadable
files, a non-writable --out, a folder that is not a model)."""



def one_line_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """A command body whose input errors (`INPUT_ERRORS`) end as one line and exit status 2."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except INPUT_ERRORS as e:
            if debug():
                raise
            fail(str(e) if str(e) else type(e).__name__)

    return run


def debug() -> bool:
    return os.environ.get("ISOGRAD_DEBUG", "").strip() not in ("", "0")


MODEL_FILES = (("config.json", ("config.json",)),
                ("weights (*.safetensors, *.bin)", ("*.safetensors", "*.bin")),
                ("tokenizer files", ("tokenizer.json", "tokenizer_config.json", "tokenizer.model",
                                     "vocab.json")))


def model_name(value: str) -> str:
    """The embedded name, a hub id, or a local model folder (one holding config.json)."""
    if value in EMBEDDED_MODELS:
        return value
    p = Path(value).expanduser()
    if p.exists():
        if not p.is_dir():
            raise typer.BadParameter(f"{value} is a file, not a model folder")
        missing = [what for what, globs in MODEL_FILES if not any(any(p.glob(g)) for g in globs)]
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


def dataset_name(value: str) -> str:
    """A registered dataset id, or an existing user file."""
    from ..qa.datasets import DATASETS, is_user_dataset

    if value in DATASETS:
        return value
    if not is_user_dataset(value):
        raise typer.BadParameter(f"unknown dataset {value!r}; choose one of "
                                 f"{', '.join(DATASETS)}, or the path of your own .jsonl or "
                                 ".csv file")
    if not Path(value).expanduser().is_file():
        raise typer.BadParameter(f"no dataset file {value}")
    return value


def problem_names(values: Sequence[str] | None) -> list[str]:
    from ..validate.problems import PROBLEMS

    names = [n for v in values or [] for n in v.split(",") if n]
    unknown = [n for n in names if n not in PROBLEMS]
    if unknown:
        raise typer.BadParameter(f"unknown problem(s) {', '.join(map(repr, unknown))}; allowed: "
                                 f"{', '.join(PROBLEMS)}")
    return names


SPECIAL_ROOTS = ("/dev/", "/proc/", "/sys/")
"""Where files are devices, pipes or views of a process, never an output (/dev/shm aside)."""


def special_file(p: Path) -> bool:
    """`p` (or what its links point to) is a device, pipe, socket or terminal: /dev/null
    swallows the rows, /dev/full grows forever, /dev/stdout cannot be rewritten or resumed."""
    where = [str(p.absolute()), os.path.realpath(p)]
    if any(w.startswith(SPECIAL_ROOTS) and not w.startswith("/dev/shm/") for w in where):
        return True
    return p.exists() and not (p.is_file() or p.is_dir())


def writable(value: str, *, folder: bool) -> str:
    """`value` can be written as a file (folder=False) or a folder: checked before any work.
    Special files (`special_file`) are refused: an output must be a regular file or folder."""
    p = Path(value).expanduser()
    if special_file(p):
        raise typer.BadParameter(f"{value} is a special file (a device, pipe or terminal); "
                                 f"expected a regular {'folder' if folder else 'file'}")
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


def optional(check: Callable[[str], str]) -> Callable[[str | None], str | None]:
    """An option callback that lets an absent value (None) through unchecked."""
    return lambda value: None if value is None else check(value)


def out_dir(value: str) -> str:
    return writable(value, folder=True)


def out_file(value: str) -> str:
    return writable(value, folder=False)


def in_file(value: str) -> str:
    """An input file: a regular file (a folder or special file is refused; a missing one is
    the core function's error, naming it)."""
    p = Path(value).expanduser()
    if special_file(p) or (p.exists() and not p.is_file()):
        raise typer.BadParameter(f"{value} is not a regular file")
    return value


def positive(value: float | None) -> float | None:
    if value is not None and not value > 0:
        raise typer.BadParameter(f"must be > 0, got {value}")
    return value


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def warning_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    sys.stderr.write(f"warning: {one_line(str(message))}\n")


def fail(message: str) -> None:
    sys.stderr.write(f"error: {one_line(message)}\n")
    sys.stderr.flush()
    sys.exit(2)
