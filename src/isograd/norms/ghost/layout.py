"""Where the examples sit in one module call, and how the rules are made to see them on dim 0.

Every rule reads example b from row b of its captured tensors and output gradients. A call
with batch size B falls in one of these layouts (anything else is refused, `GhostUnsupported`):

* **batched**: every output has B on dimension 0.
* **broadcast**: the call sees no example: every tensor input and output has size 1 on dim 0
  (GPT-2's position embedding of ``arange(T)[None]``, added to every example). Its output is
  replaced by an expanded view ``[B, ...]``: the model adds the same numbers, and autograd then
  delivers each example's output gradient in its own row instead of their sum. The captured
  tensors are expanded alike (views, no copy).
* **flattened**: every output has ``N = B·k`` rows (OPT's fc1/fc2 see ``[B·T, d]``), the rule
  treats all middle dimensions as positions, and the input is proven example-major: it comes
  from a reshape of a tensor with B on dim 0 (row-major, so example b owns rows b·k ... b·k+k-1),
  possibly through row-wise ops or the output of an earlier proven call. Captured tensors and
  output gradients are viewed as ``[B, k, ...]``. Routed tokens (mixture-of-experts layers index
  rows) are never proven: refused.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_map

from .._common import GhostUnsupported

BATCHED, BROADCAST = 0, -1
"""`Layout.k` values besides the flattened factor k >= 2."""

# autograd nodes that map row i of their (first) input to row i of their output, same shape
_ROW_WISE = frozenset({
    "ReluBackward0", "GeluBackward0", "SiluBackward0", "TanhBackward0", "SigmoidBackward0",
    "EluBackward0", "LeakyReluBackward0", "HardtanhBackward0", "SoftplusBackward0",
    "MishBackward0", "NativeLayerNormBackward0", "ToCopyBackward0", "CloneBackward0",
    "NegBackward0",
})
_RESHAPES = frozenset({"ViewBackward0", "UnsafeViewBackward0", "ReshapeAliasBackward0"})
_MAX_HOPS = 16


def _leading(x: Any) -> list[int]:
    return [int(t.shape[0]) for t in tree_flatten(x)[0] if isinstance(t, Tensor) and t.dim() > 0]


def example_major(a: Tensor, batch: int, proven: dict[Any, int]) -> bool:
    """Whether `a`'s rows [N, ...] are example-major blocks of N/B rows (N a multiple of B)."""
    n = int(a.shape[0])
    if n % batch:
        return False
    node = a.grad_fn
    if node is None:  # outside the graph: a contiguous view of a contiguous [B, ...] tensor
        base = a._base
        return (
            base is not None and base.dim() > 0 and base.shape[0] == batch
            and base.is_contiguous() and a.is_contiguous() and a.numel() == base.numel()
            and a.data_ptr() == base.data_ptr()
        )
    for _ in range(_MAX_HOPS):
        if node in proven:
            return proven[node] == n
        name = type(node).__name__
        if name in _RESHAPES:
            # a row-major reshape of [B, ...] into [N, ...] with B | N keeps each example's
            # elements in one contiguous block of N/B rows
            sizes = node._saved_self_sym_sizes
            return len(sizes) > 0 and int(sizes[0]) == batch
        if name not in _ROW_WISE or not node.next_functions or node.next_functions[0][0] is None:
            return False
        node = node.next_functions[0][0]
    return False


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


def classify(
    label: str, rows_ok: bool, args: tuple, kwargs: dict, output: Any, batch: int | None,
    proven: dict[Any, int],
) -> Layout:
    """The layout of one call (see the module docstring), or `GhostUnsupported` naming it."""
    outs = _leading(output)
    if batch is None or all(n == batch for n in outs):
        return Layout(BATCHED, batch or 0)
    ins = _leading((args, kwargs))
    if outs and all(n == 1 for n in outs) and all(n == 1 for n in ins):
        return Layout(BROADCAST, batch)
    first = next((t for t in tree_flatten((args, kwargs))[0] if isinstance(t, Tensor)), None)
    n = outs[0] if outs else 0
    if (
        rows_ok and n > batch and n % batch == 0 and all(m == n for m in outs)
        and first is not None and first.dim() > 0 and first.shape[0] == n
        and example_major(first, batch, proven)
    ):
        return Layout(n // batch, batch)
    why = (
        "its rules cannot take flattened rows" if not rows_ok and n and n % batch == 0
        else "its rows are not proven to be example-major blocks (e.g. routed tokens of a "
        "mixture-of-experts layer, or a sequence-first layout)" if n and n % batch == 0
        else "the examples are not on dimension 0"
    )
    raise GhostUnsupported(
        f"ghost needs the examples on dimension 0 of every layer's output; module {label} "
        f"produced leading sizes {outs} for a batch of {batch}: {why}. Use method='loop'"
    )


def expand_output(output: Any, batch: int) -> Any:
    """A broadcast call's output with every size-1 leading dimension expanded to the batch."""
    return tree_map(
        lambda t: t.expand(batch, *t.shape[1:])
        if isinstance(t, Tensor) and t.dim() > 0 and t.shape[0] == 1 else t,
        output,
    )


def record(output: Any, layout: Layout, proven: dict[Any, int]) -> None:
    """Remember a flattened call's output nodes: a later layer reading them is example-major."""
    if layout.k > 1:
        n = layout.batch * layout.k
        for t in tree_flatten(output)[0]:
            if isinstance(t, Tensor) and t.grad_fn is not None and t.dim() > 0 and t.shape[0] == n:
                proven[t.grad_fn] = n
