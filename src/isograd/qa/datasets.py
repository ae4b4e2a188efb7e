"""QA datasets as :class:`Question` lists: the registered ones and a user's own file.

Registered ids (``DATASETS``): ``truthfulqa-gen``, ``truthfulqa-mc1``, ``triviaqa`` (3,000
questions), ``triviaqa-150`` (the earlier 150-question sample), ``nq-open``, and ARC-Easy's
three splits ``arc-easy-train``, ``arc-easy-validation``, ``arc-easy-test`` (multiple choice). Their files ship
inside the package (``isograd/qa/data/``, with licenses and provenance). Where a file is read
from, in this order (the first hit wins):

1. ``data=``: a file, or a folder laid out like ``isograd/qa/data`` (or holding the file
   itself); when given it is the only place looked at.
2. ``$ISOGRAD_DATA/<relative path>``: a folder with that layout overrides the packaged copies.
3. the packaged copy, ``isograd/qa/data/<relative path>``.
4. the user cache, ``<isograd cache>/data/<relative path>`` (where downloads land).
5. the canonical online source, only when downloads are allowed: offline is the default, and
   ``ISOGRAD_OFFLINE=0`` allows them (unless ``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE`` is set
   to a true value); short timeout, saved into the user cache.

Files are checked against the sha256 of the known versions; an unknown version only warns.
A name that is not registered but is a file path is a user's own file (`load_dataset`,
`isograd.qa.user_datasets`).
A malformed file raises :class:`DatasetError` naming the file and the line; nothing is dropped
silently (``limit`` keeps the first ``limit`` questions in file order, and the log says how many).
Only the standard library is used here.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .parsers import (
    parse_arc,
    parse_nq_open,
    parse_triviaqa,
    parse_truthfulqa_csv,
    parse_truthfulqa_mc1,
)
from .questions import Question
from .records import DatasetError

__all__ = ["DATASETS", "DatasetError", "DatasetSpec", "Question", "dataset_version",
           "load_dataset", "offline", "resolve_dataset"]
log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 15.0
_HF_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
PACKAGED_DATA = Path(__file__).resolve().with_name("data")  # isograd/qa/data, shipped in the wheel


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: where its file lives and how to read it.

    Attributes:
        name: dataset id.
        relpath: path under ``$ISOGRAD_DATA`` / the user cache.
        url: canonical online source of that exact file.
        sha256: known good versions, sha256 -> version label.
        parse: (path, dataset name) -> questions, raising DatasetError.
        description: one line for help texts.
    """

    name: str
    relpath: str
    url: str
    sha256: dict[str, str]
    parse: Callable[[Path, str], list[Question]]
    description: str


DATASETS: dict[str, DatasetSpec] = {
    s.name: s
    for s in (
        DatasetSpec(
            "truthfulqa-gen", "truthfulqa/TruthfulQA.csv",
            "https://raw.githubusercontent.com/sylinrl/TruthfulQA/main/TruthfulQA.csv",
            {"967b82fb1fb6274e4971c6c80caa9d04f844c512b1033c146f26c78270cd384b": "current",
             "f4fcc4a841d4474c46a4719c295c6df5f12eef14c187fbb9637a29e70d9ece00": "v0 (2021)"},
            parse_truthfulqa_csv,
            "TruthfulQA generation: 817 questions, correct and incorrect references",
        ),
        DatasetSpec(
            "truthfulqa-mc1", "truthfulqa/mc_task.json",
            "https://raw.githubusercontent.com/sylinrl/TruthfulQA/main/data/mc_task.json",
            {"75b84d5cc8f0e287c055db1857808e734ea53ade8ee68aad2d007f38896330a8": "current",
             "131e6f4156297bee09b38279e2fa847e4359c200504eca99ea3fab4b2d3a6144": "v0 (2021)"},
            parse_truthfulqa_mc1,
            "TruthfulQA MC1: 817 questions, one correct option among ~5",
        ),
        DatasetSpec(
            "triviaqa", "triviaqa/triviaqa_sm_sub.jsonl",
            # llm-foundry's 3,000-question subsample of unfiltered validation, pinned commit
            "https://raw.githubusercontent.com/mosaicml/llm-foundry/"
            "8c8dd48f72168c5d51e2f7b151595892a8fba43d/scripts/eval/local_data/world_knowledge/"
            "triviaqa_sm_sub.jsonl",
            {"e3e8222e94cae291d7ab132e59f09c4f51580ed3e23639cf29c2926b4c8284e9": "sm-sub-3000"},
            parse_triviaqa,
            "TriviaQA (unfiltered validation) subsample: 3,000 questions with answer aliases",
        ),
        DatasetSpec(
            "triviaqa-150", "triviaqa_sample/triviaqa_150.json",
            # the earlier 150-question sample of the committed runs, pinned commit
            "https://raw.githubusercontent.com/Clivia0617/persona-hallucination-study/"
            "29ad64c1524bc1175aeece87a5786536c7fec0ae/data/triviaqa.json",
            {"232c91a7be4357af547e101498c9613b210dcb292d6162145e4c37ff6f86cfad": "sample-150"},
            parse_triviaqa,
            "TriviaQA (rc.wikipedia validation) sample: 150 questions with answer aliases",
        ),
        DatasetSpec(
            "nq-open", "nq_open/NQ-open.dev.jsonl",
            "https://raw.githubusercontent.com/google-research-datasets/natural-questions/"
            "fb26a3073b1fe636c97302890a27b491d6530130/nq_open/NQ-open.dev.jsonl",
            {"f15567f38099f3615f5b8a685c0aef449c11ad90d3da3735e8d1b98115b40616": "dev"},
            parse_nq_open,
            "Natural Questions open-domain dev: 3,610 questions with short answers",
        ),
        *(DatasetSpec(
            f"arc-easy-{split}", f"arc_easy/ARC-Easy-{split}.jsonl",
            # the allenai/ai2_arc ARC-Easy splits as redistributed there, pinned commit
            "https://raw.githubusercontent.com/zhaoxlpku/HKU-DASC7606-A2/"
            f"fcca017f3468a25901ad298913e976c42ad9165e/data/ARC-Easy-{split}.jsonl",
            {sha: "ai2_arc"}, parse_arc,
            f"ARC-Easy {split}: {n} science questions, one correct option among 3-5 (mostly 4)",
        ) for split, n, sha in (
            ("train", "2,251", "75d0bb9b9218278fb9cb430fc0ace63d71cfe02ca1a03d39374260c7cd7c67f7"),
            ("validation", "570", "e45dbcd2d8e8235af16302f4be0dd00c5d173878c583f4dfe55b70f9df07b2f8"),
            ("test", "2,376", "c9757629cb775832c3c67b4aa1425e3eda01708a2b02fa229b0c3ed1bcb70fe1"),
        )),
    )
}


# ---------------------------------------------------------------- resolution


def data_cache_dir() -> Path:
    """``<isograd user cache>/data``; same rule as ``isograd.lm.models.cache_dir`` (no torch)."""
    env = os.environ.get("ISOGRAD_CACHE")
    if env:
        return Path(env) / "data"
    try:
        from platformdirs import user_cache_dir
    except ImportError:  # platformdirs is in the lm extra; mirror its Linux default
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "isograd"
    else:
        base = Path(user_cache_dir("isograd"))
    return base / "data"


def _flag(var: str) -> bool | None:
    """An environment switch: True / False, or None when unset or empty."""
    val = os.environ.get(var, "").strip().lower()
    return None if not val else val not in ("0", "false", "no", "off")


def offline() -> bool:
    """Whether dataset downloads are refused: the default (``ISOGRAD_OFFLINE`` unset).

    ``ISOGRAD_OFFLINE=0`` allows them, unless ``HF_HUB_OFFLINE`` or ``HF_DATASETS_OFFLINE`` is
    set to a true value (the hub's own switch wins: it means this machine has no network).
    """
    if any(_flag(v) for v in _HF_OFFLINE_VARS):
        return True
    allowed = _flag("ISOGRAD_OFFLINE") is False
    return not allowed


def _spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}, or give "
                         "the path of your own .jsonl or .csv file") from None


def _in_dir(folder: Path, spec: DatasetSpec) -> list[Path]:
    return [folder / spec.relpath, folder / Path(spec.relpath).name]


def _download(spec: DatasetSpec, dest: Path) -> Path:
    log.info("downloading %s from %s", spec.name, spec.url)
    req = urllib.request.Request(spec.url, headers={"User-Agent": "isograd"})
    with urllib.request.urlopen(req, timeout=DOWNLOAD_TIMEOUT_S) as resp:
        body = resp.read()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    tmp.write_bytes(body)
    tmp.replace(dest)  # atomic: a half-written file never sits at the final path
    return dest


def resolve_dataset(name: str, *, data: str | Path | None = None) -> Path:
    """The file ``load_dataset(name, data=data)`` reads (downloading it if needed and allowed).

    Raises:
        ValueError: unknown name. FileNotFoundError: nowhere to be found (lists what was tried).
    """
    spec = _spec(name)
    if data is not None:
        p = Path(data).expanduser()
        tried = _in_dir(p, spec) if p.is_dir() else [p]
        for c in tried:
            if c.is_file():
                return c
        raise FileNotFoundError(f"{name}: no data file at {' or '.join(map(str, tried))}")
    tried: list[str] = []
    candidates: list[Path] = []
    env = os.environ.get("ISOGRAD_DATA")
    if env:
        candidates.append(Path(env).expanduser() / spec.relpath)
    cached = data_cache_dir() / spec.relpath
    candidates += [PACKAGED_DATA / spec.relpath, cached]
    for c in candidates:
        if c.is_file():
            return c
        tried.append(str(c))
    if offline():
        tried.append(f"{spec.url} (not tried: downloads are off; ISOGRAD_OFFLINE=0 allows them)")
    else:
        try:
            return _download(spec, cached)
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            tried.append(f"{spec.url} ({type(e).__name__}: {e})")
    raise FileNotFoundError(
        f"dataset {name!r} not found. Tried: " + "; ".join(tried)
        + f". Pass --data PATH (data=PATH), set ISOGRAD_DATA to a folder holding {spec.relpath}, "
        "or allow downloads with ISOGRAD_OFFLINE=0."
    )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dataset_version(name: str, path: str | Path) -> str | None:
    """Version label of a known file (by sha256), or None for an unknown one."""
    return _spec(name).sha256.get(_sha256(Path(path)))


def is_user_dataset(name: str) -> bool:
    """Whether ``name`` is a user's file (``isograd qa --dataset PATH``), not a registered id."""
    from .user_datasets import looks_like_path

    return name not in DATASETS and (looks_like_path(name) or Path(name).expanduser().is_file())


def load_dataset(name: str, *, data: str | Path | None = None, limit: int | None = None) -> list[Question]:
    """Load a dataset as questions, in file order.

    Args:
        name: one of ``DATASETS`` (``truthfulqa-gen``, ``truthfulqa-mc1``, ``triviaqa``,
            ``triviaqa-150``, ``nq-open``, ``arc-easy-train`` / ``-validation`` / ``-test``), or the path of a user's JSONL or CSV file
            (fields: `isograd.qa.user_datasets`).
        data: a file or a folder (the packaged data's layout, or holding the file); overrides
            the search (see the module docstring). Registered datasets only.
        limit: keep the first ``limit`` questions in file order (None = all).

    Returns:
        The questions; ids are stable and do not depend on ``limit``.

    Raises:
        ValueError: unknown name, bad limit, or ``data`` with a user's file. DatasetError:
        malformed file (file, line and field named). FileNotFoundError: the file is nowhere
        to be found.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    if is_user_dataset(name):
        from .user_datasets import load_user_dataset

        if data is not None:
            raise ValueError(f"--data (data=) applies to registered datasets; the dataset "
                             f"{name!r} is a file already: drop --data {data}")
        path, version = Path(name), None
        questions = load_user_dataset(name)
    else:
        spec = _spec(name)
        path = resolve_dataset(name, data=data)
        version = dataset_version(name, path)
        if version is None:
            warnings.warn(f"{path}: sha256 matches no known version of {name} (known: "
                          f"{', '.join(spec.sha256.values())}); results may not compare with "
                          "others", stacklevel=2)
        questions = spec.parse(path, name)
    total = len(questions)
    if not total:
        raise DatasetError(path, None, "no questions in file")
    if limit is not None and limit > total:
        warnings.warn(f"{name}: limit={limit} but the file has only {total} questions; using all",
                      stacklevel=2)
    kept = questions if limit is None else questions[:limit]
    log.info("%s: loaded %d of %d questions from %s (version %s)", name, len(kept), total, path,
             version or "unknown")
    return kept
