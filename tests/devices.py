"""Device checks shared by the test suite.

`meta_default_device()` makes every tensor created without an explicit device land on the
"meta" device (no data). With the model and the batch on the CPU, a result that is unchanged
under it proves that the code creates each tensor on the device of what it meets.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import torch


@contextlib.contextmanager
def meta_default_device() -> Iterator[None]:
    """Default device "meta" inside the block (restored after)."""
    with torch.device("meta"):
        yield


def _leaves(x: Any) -> list[Any]:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return [v for f in dataclasses.fields(x) for v in _leaves(getattr(x, f.name))]
    if isinstance(x, dict):
        return [v for k in sorted(x, key=str) for v in _leaves(x[k])]
    if isinstance(x, (list, tuple)):
        return [v for e in x for v in _leaves(e)]
    return [x]


def assert_same_under_meta(call: Callable[[], Any]) -> Any:
    """Run `call` normally and under `meta_default_device`; assert every leaf is equal and no
    tensor comes back on the meta device. Returns the normal result."""
    ref = call()
    with meta_default_device():
        got = call()
    a, b = _leaves(ref), _leaves(got)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        if isinstance(x, torch.Tensor):
            assert isinstance(y, torch.Tensor) and y.device == x.device, (x.device, y)
            torch.testing.assert_close(y, x, rtol=0, atol=0, equal_nan=True)
        else:
            assert x == y or (x != x and y != y)
    return ref
