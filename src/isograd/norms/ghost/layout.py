"""Where the examples sit in one module call, and how the rules are made to see them on dim 0.

Every rule reads example b from row b of its captured tensors and output gradients. Which
tensors hold examples, and where, is read from their provenance (`provenance.py`), never from
their shapes: a leading size that happens to equal B (a [T, d] position embedding at B == T,
a time-major flatten) proves nothing. A call falls in one of these layouts (anything else is
refused, `GhostUnsupported`, and ``method="auto"`` uses the loop engine):

* **batched**: every output is example-major with one row per example.
* **broadcast**: the call sees no example: every tensor input and output is batch-free with
  size 1 on dim 0 (GPT-2's position embedding of ``arange(T)[None]``, added to every example).
  Its output is replaced by an expanded view ``[B, ...]``: the model adds the same numbers, and
  autograd then delivers each example's output gradient in its own row instead of their sum.
  The captured tensors are expanded alike (views, no copy).
* **flattened**: every output is example-major with ``N = B·k`` rows (OPT's fc1/fc2 see
  ``[B·T, d]``: a row-major reshape of a tensor with the examples on dim 0, so example b owns
  rows b·k ... b·k+k-1), and the rule treats all middle dimensions as positions. Captured
  tensors and output gradients are viewed as ``[B, k, ...]``. Routed tokens (mixture-of-experts
  layers index rows) and time-major rows are never proven: refused.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch.utils._pytree import tree_flatten, tree_map

from .._common import GhostUnsupported
from .provenance import Provenance

BATCHED, BROADCAST = 0, -1
"""`Layout.k` values besides the flattened factor k >= 2."""


def _leading(x: Any) -> list[int]:
    return [int(t.shape[0]) for t in tree_flatten(x)[0] if isinstance(t, Tensor) and t.dim() > 0]


def _tensors(x: Any) -> list[Tensor]:
    return [t for t in tree_flatten(x)[0] if isinstance(t, Tensor)]


class Layout:
    """The layout of one call: `k` is BATCHED, BROADCAST or the flattened row factor."""

    def __init__(self, k: int, batch: int) -> None:
        self.k = k
        self.batch = batch

    def ctx(self, ctx: Any) -> Any:
        """The captured context as the rules expect it (examples on dim 0)."""
        if self.k == BATCHED:
            return ctx
        return tree_map(self._fix, ctx)

    def _fix(self, t: Any) -> Any:
        if not isinstance(t, Tensor) or t.dim() == 0:
            return t
        b, k = self.batch, self.k
        if k == BROADCAST:
            return t.expand(b, *t.shape[1:]) if t.shape[0] == 1 else t
        return t.reshape(b, k, *t.shape[1:]) if t.shape[0] == b * k else t

    def grad(self, g: Tensor | None) -> Tensor | None:
        """An output gradient with examples on dim 0."""
        if g is None or self.k <= 1 or g.dim() == 0 or g.shape[0] != self.batch * self.k:
            return g
        return g.reshape(self.batch, self.k, *g.shape[1:])


def require_batch_dim(module: nn.Module, x: Tensor, dims: int, exact: bool = False) -> None:
    """`GhostUnsupported` unless `x` has at least (or, with `exact`, exactly) `dims` dimensions:
    a rule's input without its batch dimension (an unbatched call) has no per-example rows."""
    if x.dim() < dims or (exact and x.dim() != dims):
        raise GhostUnsupported(
            f"ghost needs a batch dimension first; {type(module).__name__} got shape "
            f"{list(x.shape)}. Use method='loop'"
        )


def classify(
    label: str, rows_ok: bool, args: tuple, kwargs: dict, output: Any, batch: int | None,
    prov: Provenance | None,
) -> Layout:
    """The layout of one call (see the module docstring), or `GhostUnsupported` naming it.

    Read from the provenance tags of the call's tensors (`provenance.py`), not from their
    shapes: a leading size equal to B proves nothing.
    """
    outs = [t for t in _tensors(output) if t.dim() > 0]
    if batch is None or prov is None:
        return Layout(BATCHED, batch or 0)
    tags = [prov.tag(t) for t in outs]
    ins = [prov.tag(t) for t in _tensors((args, kwargs)) if t.dim() > 0]
    if outs and all(k == 1 for k in tags):
        return Layout(BATCHED, batch)
    if outs and all(k is None for k in tags + ins) and all(n == 1 for n in _leading((
            args, kwargs, output))):
        return Layout(BROADCAST, batch)
    if outs and all(k is None for k in tags) and all(t.shape[0] == batch for t in outs):
        # batch-free rows, one per example (BART's arange(T).expand(B, -1) positions): exact
        # when every use lines row b up with example b, checked once the forward is done
        for t in outs:
            prov.watch(t, label)
        return Layout(BATCHED, batch)
    k = tags[0] if tags else None
    if rows_ok and k is not None and k >= 2 and all(t == k for t in tags):
        return Layout(k, batch)
    shapes = [list(t.shape) for t in outs]
    why = (
        "its output does not come from the batch (a batch-free tensor such as pos(arange(T)) "
        "of shape [T, d], with no example dimension)" if tags and all(t is None for t in tags)
        else "its rules cannot take flattened rows" if k is not None and k >= 2
        else "its rows are not proven to hold the examples in order on dimension 0 (e.g. a "
        "sequence-first or time-major layout, or routed tokens of a mixture-of-experts layer)"
    )
    raise GhostUnsupported(
        f"ghost needs the examples on dimension 0 of every layer's output; module {label} "
        f"produced shapes {shapes} for a batch of {batch}: {why}. Use method='loop'"
    )


def expand_output(output: Any, batch: int) -> Any:
    """A broadcast call's output with every size-1 leading dimension expanded to the batch."""
    return tree_map(
        lambda t: t.expand(batch, *t.shape[1:])
        if isinstance(t, Tensor) and t.dim() > 0 and t.shape[0] == 1 else t,
        output,
    )
