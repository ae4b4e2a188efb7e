"""The options of ``isograd serve`` and `isograd.serve.run`, declared once (`isograd.options`).

`SERVE` is the model's load options (`isograd.lm.options.LOAD`) plus where the server listens,
its batching limits and its access key. The command line, `run`'s defaults and
`ServeOptions`' defaults all come from it. Importing this module loads no web framework, so
``isograd --help`` stays fast.
"""

from __future__ import annotations

from ..lm.options import LOAD
from ..options import Option, Options
from ..qa.options import THREADS

SERVE = LOAD + Options((
    Option("host", "127.0.0.1", "Address to listen on (127.0.0.1: this machine only)."),
    Option("port", 8000, "Port to listen on.", type=int, min=0, max=65535),
    Option("detector", None, "Detector file (isograd fit-detector): adds p_error and abstain "
           "to every answer."),
    Option("max_batch_size", 8, "Requests per generation batch and score pass.", type=int, min=1),
    Option("max_wait_ms", 10.0, "How long a batch waits for more requests (ms).", type=float,
           min=0),
    Option("queue_size", 64, "Requests waiting at most; more get 429.", type=int, min=1),
    Option("request_timeout_s", 300.0, "Seconds before a request is answered 503.", type=float,
           positive=True, flag="--request-timeout"),
    Option("max_tokens_cap", 256, "Largest max_tokens a request may ask.", type=int, min=1,
           flag="--max-tokens"),
    Option("api_key", None, "Require 'Authorization: Bearer KEY' (or set ISOGRAD_API_KEY).",
           envvar="ISOGRAD_API_KEY"),
    THREADS.replace(help="Torch CPU threads."),
))
"""Every option of ``isograd serve``; the Python-only ones of `run` (uncertainty, log_level)
are its keywords."""
