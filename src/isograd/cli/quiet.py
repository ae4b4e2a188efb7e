"""``--quiet``: no progress bars (the model's download and loading included) and no library
warnings while a command runs."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

# the libraries whose progress bars and warnings loading a model shows
_LOGGERS = ("transformers", "huggingface_hub", "accelerate", "torch")


@contextmanager
def quieted(quiet: bool) -> Iterator[None]:
    """Within the block (when `quiet`): Hugging Face progress bars off, library loggers at
    ERROR, Python warnings ignored; everything is restored on exit."""
    if not quiet:
        yield
        return
    saved_env = os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS")
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    bars = _hf_bars(False)  # first: importing transformers configures its loggers
    levels = {name: logging.getLogger(name).level for name in _LOGGERS}
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        if bars:
            _hf_bars(True)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        if saved_env is None:
            os.environ.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
        else:
            os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = saved_env


def _hf_bars(on: bool) -> bool:
    """Turn the progress bars of huggingface_hub and transformers on or off (those installed);
    whether they were on before."""
    was = False
    try:
        from huggingface_hub.utils import (
            are_progress_bars_disabled,
            disable_progress_bars,
            enable_progress_bars,
        )

        was = not are_progress_bars_disabled()
        (enable_progress_bars if on else disable_progress_bars)()
    except ImportError:
        pass
    try:
        from transformers.utils import logging as tlog

        was = was or tlog.is_progress_bar_enabled()
        (tlog.enable_progress_bar if on else tlog.disable_progress_bar)()
    except ImportError:
        pass
    return was
