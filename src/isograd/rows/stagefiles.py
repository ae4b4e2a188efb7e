"""The files of a staged run: per-stage JSONL rows and config files.

A stage writes ``DIR/<stage>.jsonl`` (one row per question id, appended and flushed) and
``DIR/<stage>.config.json``: the options that determine its rows and the fingerprints of the
stages it reads (``upstream``). A stage whose recorded config differs from the requested one is
refused (`RunMismatchError`) unless it is redone (`reset_stage`); rows already written are
never recomputed (the one row loop, `isograd.rows.runner.run_rows`, skips their ids, on one
process or under torchrun), so a killed stage resumes where it stopped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .files import digest, read_rows


class RunMismatchError(ValueError):
    """DIR already holds a run made with other options."""


@dataclass(frozen=True)
class StageConfig:
    """What determines a stage's rows.

    Attributes:
        stage: the stage's name (also its file stem: ``<stage>.jsonl``).
        options: the options that determine its rows (JSON values).
        upstream: name -> fingerprint of each stage whose rows it reads.
    """

    stage: str
    options: Mapping[str, Any]
    upstream: Mapping[str, str]

    @property
    def fingerprint(self) -> str:
        """16 hex digits identifying (options, upstream)."""
        return digest({"options": self.options, "upstream": self.upstream})

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "options": dict(self.options),
                "upstream": dict(self.upstream), "fingerprint": self.fingerprint}


def stage_path(out: Path, stage: str) -> Path:
    """The rows of `stage` in run folder `out`."""
    return out / f"{stage}.jsonl"


def config_path(out: Path, stage: str) -> Path:
    """The recorded config of `stage` in run folder `out`."""
    return out / f"{stage}.config.json"


def read_config(out: Path, stage: str) -> StageConfig | None:
    """The recorded config of `stage` in `out`, or None when the stage never ran there."""
    path = config_path(out, stage)
    if not path.exists():
        return None
    d = json.loads(path.read_text(encoding="utf-8"))
    return StageConfig(stage=d["stage"], options=d["options"], upstream=d["upstream"])


def write_config(out: Path, cfg: StageConfig) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = config_path(out, cfg.stage).with_suffix(".tmp")
    tmp.write_text(json.dumps(cfg.to_json(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, config_path(out, cfg.stage))


def diff_configs(old: StageConfig, new: StageConfig, *, ignore: Sequence[str] = ()) -> list[str]:
    """Human-readable differences ("judge: 'auto' -> 'exact'", "input 'generate' changed")."""
    keys = sorted((set(old.options) | set(new.options)) - set(ignore))
    out = [f"{k}: {old.options.get(k)!r} -> {new.options.get(k)!r}"
           for k in keys if old.options.get(k) != new.options.get(k)]
    out += [f"its input {u!r} changed" for u in sorted(set(old.upstream) | set(new.upstream))
            if old.upstream.get(u) != new.upstream.get(u)]
    return out


def open_stage(out: Path, new: StageConfig, *, ignore: Sequence[str] = ()) -> None:
    """Record `new` as the config of its stage, or refuse when the stage holds rows made
    otherwise (options in `ignore` are the caller's to check)."""
    old = read_config(out, new.stage)
    if old is not None:
        diff = diff_configs(old, new, ignore=ignore)
        if diff:
            raise RunMismatchError(
                f"{out}: the {new.stage} stage was made with other options ({'; '.join(diff)}); "
                f"pass --force-stage {new.stage.split('-')[0]} to redo it (and what depends on "
                "it), or use another --out")
        return
    if stage_path(out, new.stage).exists():
        raise RunMismatchError(f"{stage_path(out, new.stage)} exists without "
                               f"{config_path(out, new.stage).name}; use another --out")
    write_config(out, new)


def reset_stage(out: Path, stage: str) -> None:
    """Delete a stage's rows and config (the stage is then redone from scratch)."""
    for p in (stage_path(out, stage), config_path(out, stage)):
        p.unlink(missing_ok=True)


def rows_by_id(out: Path, stage: str) -> dict[str, dict[str, Any]]:
    """The rows of `stage` in `out` by id (empty when the stage never ran)."""
    return {r["id"]: r for r in read_rows(stage_path(out, stage))}
