"""Which tensors of a forward pass come from the batch, and where their examples sit.

Shapes alone cannot say it: with batch size B equal to the sequence length T, a position
embedding ``pos(arange(T))`` of shape [T, d] and a time-major flatten
``h.transpose(0, 1).reshape(T·B, d)`` both look batched. `Provenance` is a `TorchFunctionMode`
active during the ghost engine's forward; it tags every tensor that a torch function returns:

* no tag: batch-free (made from parameters, buffers and constants only);
* ``k >= 1``: example-major: dimension 0 holds the examples in order, k rows each (k = 1: one
  row per example; k >= 2: a flattened ``[B·k, ...]``);
* `UNKNOWN`: derived from the batch, with the examples not proven to sit on dimension 0 (a
  transpose or permute of dimension 0, a reduction over it, an op not listed below).

The tensors of the batch start as k = 1 (those whose leading size is B; other batch tensors
are `UNKNOWN`). An op keeps dimension 0's examples only when it is known to: elementwise ops
(with batch-free operands broadcast against them), row-wise layers (linear, embedding lookup,
norms, convolution, attention), reductions and softmaxes over other dimensions, reshapes
(row-major order kept: a ``[B·k, ...]`` view is example-major when B divides its leading size),
indexing and moves that leave dimension 0 in place. Anything else turns a batch-derived result
`UNKNOWN`, so the engine refuses that layer instead of guessing (`layout.py`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

UNKNOWN = 0
"""Tag of a batch-derived tensor whose examples are not proven to sit on dimension 0."""

# out[b] depends on the operands' rows b only (operands broadcast from the right)
_ELEMENTWISE = frozenset("""
add sub rsub mul div true_divide floor_divide remainder fmod pow neg negative exp expm1 log log1p
log2 sqrt rsqrt reciprocal square abs sign tanh sigmoid relu relu6 gelu silu softplus mish elu
selu celu leaky_relu hardtanh hardswish hardsigmoid logsigmoid log_sigmoid softsign tanhshrink sin cos erf
erfc where masked_fill clamp clamp_min clamp_max clip maximum minimum fmax fmin eq ne lt le gt ge
logical_and logical_or logical_not logical_xor bitwise_and bitwise_or bitwise_not bitwise_xor
and or xor invert float double half bfloat16 long int bool to type type_as contiguous clone
detach dropout alpha_dropout feature_alpha_dropout nan_to_num lerp addcmul addcdiv isnan isinf
isfinite floor ceil round trunc frac atan atan2 tan sinh cosh glu requires_grad
""".split())
# row-wise layers: out[b] from input row b (dimension 0 of the first argument) and parameters
_ROW_LAYERS = frozenset("""
linear bilinear layer_norm rms_norm group_norm batch_norm instance_norm conv1d conv2d conv3d
conv_transpose1d conv_transpose2d scaled_dot_product_attention pad embedding gather
""".split())
# reductions or scans over the `dim` argument: keep dimension 0 when `dim` excludes it
_OVER_DIM = frozenset("""
sum mean amax amin max min prod var std logsumexp softmax log_softmax cumsum cumprod argmax
argmin any all count_nonzero nansum nanmean var_mean std_mean
""".split())
# ops whose saved internals [rows, ...] of dim >= 2 are per-row statistics (mean, rstd, logsumexp)
_ROW_INTERNALS = frozenset({"layer_norm", "rms_norm", "group_norm", "scaled_dot_product_attention"})
# ops whose result's values do not depend on their tensor input (only its shape or dtype)
_CONSTANT = frozenset("""
zeros_like ones_like empty_like full_like rand_like randn_like randint_like new_zeros new_ones
new_empty new_full new_tensor
""".split())
_RESHAPES = frozenset({"view", "reshape", "view_as", "reshape_as", "flatten", "unflatten"})
_SPLITS = frozenset({"split", "chunk", "unbind", "tensor_split", "split_with_sizes"})


def _base(func: Any) -> str:
    name = getattr(func, "__name__", "")
    if name == "__get__":  # a property (t.T, t.mT, t.data): by the descriptor's own name
        name = getattr(getattr(func, "__self__", None), "__name__", name)
    name = name.strip("_")
    if name.startswith("r") and name[1:] in {"add", "sub", "mul", "div", "truediv", "pow",
                                              "matmul", "and", "or", "xor"}:
        name = name[1:] if name != "rsub" else name
    return {"truediv": "div", "iadd": "add", "isub": "sub", "imul": "mul",
            "itruediv": "div"}.get(name, name.rstrip("_"))


def _dims(arg: Any, ndim: int) -> list[int] | None:
    if arg is None:
        return None
    items = arg if isinstance(arg, (tuple, list)) else [arg]
    if not all(isinstance(d, int) for d in items):
        return None
    return [d % ndim if ndim else 0 for d in items]


_ACTIVE: list[Provenance] = []


def current() -> Provenance | None:
    """The `Provenance` of the forward running now (None outside the ghost engine's forward)."""
    return _ACTIVE[-1] if _ACTIVE else None


class Provenance(TorchFunctionMode):
    """Tags the tensors of one forward pass (see the module docstring)."""

    def __enter__(self) -> Provenance:
        _ACTIVE.append(self)
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        _ACTIVE.remove(self)
        super().__exit__(*exc)

    def __init__(self, batch: Any, size: int | None) -> None:
        super().__init__()
        self.size = size
        self.tags: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.groups: list[list[Any]] = []
        self.watched: WeakIdKeyDictionary = WeakIdKeyDictionary()
        """Batch-free module outputs with one row per example (`watch`) -> their group
        ``[label, why a use does not line row b up with example b, or None]``."""
        self.saved: list[list[Any]] | None = None
        """Entries ``[tensor, copy, version, op tag]`` appended by saved-tensor hooks during an
        op: a tensor an op saves for its backward (layer norm's statistics) gets the op's tag,
        and its version is taken once the op is done (an in-place op saves its result)."""
        for t in tree_flatten(batch)[0]:
            if isinstance(t, Tensor):
                self.tags[t] = 1 if t.dim() > 0 and t.shape[0] == size else UNKNOWN

    def watch(self, t: Tensor, label: str) -> None:
        """Follow the uses of a batch-free output [B, ...] (``arange(T).expand(B, -1)`` into a
        position embedding): its rows are the examples only if every use lines row b up with
        example b (an elementwise op with an example-major operand of the same shape)."""
        group = [label, None]
        self.groups.append(group)  # outlives the tensors (weakly held in `watched`)
        self.watched[t] = group

    def misaligned(self) -> list[tuple[str, str]]:
        """(module, the use) of every watched output used other than row by row."""
        return [(g[0], g[1]) for g in self.groups if g[1] is not None]

    def _uses(self, name: str, args: tuple, ins: list[Tensor], from_batch: list, out: Any
              ) -> None:
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, Tensor)]
        if not outs:
            return  # t.shape, t._version, t.dim(): no values move
        for t in ins:
            group = self.watched.get(t)
            if group is None:
                continue
            rows = bool(outs) and all(o.dim() > 0 and o.shape[0] == t.shape[0] for o in outs)
            if name in _ROW_LAYERS:
                rows = rows and args[:1] and args[0] is t
            elif name == "getitem":
                rows = rows and _keeps_rows(t, args[1], [(t, 1)])
            else:
                rows = rows and name in _ELEMENTWISE and all(o.dim() == t.dim() for o in outs)
            if not rows:
                group[1] = group[1] or f"{name} on its output of shape {list(t.shape)}"
                continue
            aligned = any(k == 1 and s.dim() == outs[0].dim() and s.shape[0] == outs[0].shape[0]
                          for s, k in from_batch)
            if not aligned:  # e.g. dropout or a cast: the result's own uses decide
                for o in outs:
                    self.watched[o] = group

    def tag(self, t: Tensor) -> int | None:
        """None (batch-free), UNKNOWN, or the example-major row factor k."""
        return self.tags.get(t)

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None):
        kwargs = kwargs or {}
        mark = len(self.saved) if self.saved is not None else 0
        out = func(*args, **kwargs)
        if self.saved is not None:
            for entry in self.saved[mark:]:  # as autograd: the version once the op is done
                entry[2] = entry[0]._version
        ins = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, Tensor)]
        tagged = [(t, self.tags.get(t)) for t in ins]
        from_batch = [(t, k) for t, k in tagged if k is not None]
        name = _base(func)
        if len(self.watched) and any(t in self.watched for t in ins):
            self._uses(name, args, ins, from_batch, out)
        if not from_batch:
            return out
        if name == "setitem" and args and isinstance(args[0], Tensor):
            self.tags[args[0]] = self._setitem(args, from_batch)
            return out
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, Tensor)]
        if not outs:
            return out
        try:
            k = self._rule(name, args, kwargs, from_batch, outs)
        except Exception:  # an argument form the rules do not know: not proven
            k = UNKNOWN
        for t in outs:
            self.tags[t] = k
        if self.saved is not None and k != UNKNOWN and name in _ROW_INTERNALS:
            # the per-row statistics these ops save (not their inputs: weights may be [B, ...])
            own = {id(t) for t in ins}
            for entry in self.saved[mark:]:
                if id(entry[0]) not in own and entry[0].dim() >= 2:
                    entry[-1] = k
        return out

    def _setitem(self, args: tuple, src: list) -> int:
        """``x[key] = value`` in place: x keeps its rows when both are example-major alike."""
        x, key = args[0], args[1]
        k = self.tags.get(x)
        value = args[2] if len(args) > 2 else None
        if k is None and src and all(kk == src[0][1] for _, kk in src) and src[0][1] != UNKNOWN \
                and x.shape[0] == self.size * src[0][1]:
            k = src[0][1]  # a batch-free buffer (zeros_like) filled row by row with examples
        if k is None or k == UNKNOWN or any(kk != k for _, kk in src):
            return UNKNOWN
        from_value = isinstance(value, Tensor) and self.tags.get(value) is not None
        if isinstance(key, Tensor) and key.dtype == torch.bool and key.shape == x.shape:
            return UNKNOWN if from_value else k  # x[mask] = constant: as masked_fill
        if any(self.tags.get(t) is not None for t in tree_flatten(key)[0]
               if isinstance(t, Tensor)):
            return UNKNOWN  # positions chosen by the batch: rows may mix
        if not _keeps_rows(x, key, [(x, k)]):
            return UNKNOWN
        # the value fills x[key] row by row: same rows, same number of dimensions
        part = x[key]
        ok = not from_value or (value.dim() == part.dim() and value.shape[0] == part.shape[0])
        return k if ok else UNKNOWN

    def _rule(self, name: str, args: tuple, kwargs: dict, src: list, outs: list[Tensor]
              ) -> int | None:
        """The tag of every output of one op with batch-derived inputs `src` [(tensor, tag)]."""
        if name in _CONSTANT:
            return None  # the values do not depend on the input: batch-free
        ks = {k for _, k in src}
        if UNKNOWN in ks or len(ks) != 1:
            return UNKNOWN
        k = ks.pop()
        x = args[0] if args and isinstance(args[0], Tensor) else None
        out = outs[0]
        rows = out.dim() > 0 and all(o.dim() > 0 and o.shape[0] == out.shape[0] for o in outs)
        if not rows or self.size is None:
            return UNKNOWN
        aligned = all(t.dim() == out.dim() and t.shape[0] == out.shape[0] for t, _ in src)
        if name in _ELEMENTWISE:
            return k if aligned else UNKNOWN
        if name == "gather" and x is not None:  # out[b, ...] = x[b, index[b, ...]] (dim > 0)
            dim = args[1] if len(args) > 1 else kwargs.get("dim")
            index = args[2] if len(args) > 2 else kwargs.get("index")
            ok = isinstance(dim, int) and dim % x.dim() != 0 and isinstance(index, Tensor)
            ok = ok and all(t.dim() == out.dim() and t.shape[0] == out.shape[0] for t, _ in src)
            return k if ok and x.shape[0] == out.shape[0] else UNKNOWN
        if name in _ROW_LAYERS:
            # the first argument carries the rows (embedding: the ids; gather: the source);
            # attention's q, k, v, mask and gather's index must be example-major alike
            first = args[0] if args else kwargs.get("input")
            ok = isinstance(first, Tensor) and first.dim() >= 2 and self.tags.get(first) == k
            same = all(t is first or (t.dim() == out.dim() and t.shape[0] == out.shape[0]
                                      and name in {"gather", "scaled_dot_product_attention"})
                       for t, _ in src)
            dim = args[1] if name == "gather" and len(args) > 1 else kwargs.get("dim", 1)
            ok = ok and same and first.shape[0] == out.shape[0]
            return k if ok and (name != "gather" or dim % first.dim()) else UNKNOWN
        if name in {"addmm", "addmv"}:  # bias + rows of the second argument times a matrix
            mat = args[1] if len(args) > 1 else kwargs.get("mat1")
            return k if all(t is mat for t, _ in src) and mat.dim() == 2 else UNKNOWN
        if name == "baddbmm":  # input + batch1 @ batch2, all batched on dim 0
            return k if out.dim() == 3 and aligned else UNKNOWN
        if name in {"matmul", "bmm"}:
            # batched matmul keeps leading dims; 2-D: rows of the left operand
            left = args[0] if args else None
            if out.dim() >= 3 and aligned:
                return k
            only_left = all(t is left for t, _ in src)
            return k if out.dim() == 2 and only_left and left.dim() == 2 else UNKNOWN
        if name in {"max", "min"} and len(args) > 1 and isinstance(args[1], Tensor):
            return k if aligned else UNKNOWN  # elementwise max/min of two tensors
        if name in _OVER_DIM:
            dim = args[1] if len(args) > 1 else kwargs.get("dim")
            dims = _dims(dim, x.dim()) if x is not None else None
            return k if dims and 0 not in dims and x.shape[0] == out.shape[0] else UNKNOWN
        if name in _RESHAPES and x is not None:
            # row-major order is kept: example b owns a contiguous block of elements
            n = int(out.shape[0])
            return n // self.size if n % self.size == 0 and n >= self.size else UNKNOWN
        if name in _SPLITS or name in {"cat", "concat", "concatenate", "stack"}:
            at = 1 if name in {"unbind", "cat", "concat", "concatenate", "stack"} else 2
            dim = args[at] if len(args) > at else kwargs.get("dim", 0)
            ref = x if x is not None else src[0][0]
            ok = isinstance(dim, int) and dim % max(ref.dim() + (name == "stack"), 1) != 0
            rows = all(t.shape[0] == out.shape[0] and t.dim() == out.dim() - (name == "stack")
                       for t, _ in src)
            return k if ok and rows else UNKNOWN
        if name in {"transpose", "swapaxes", "swapdims", "movedim", "moveaxis"}:
            a, b = (list(args[1:3]) + [None, None])[:2]
            if isinstance(a, int) and isinstance(b, int) and x is not None:
                return k if a % x.dim() != 0 and b % x.dim() != 0 else UNKNOWN
            return UNKNOWN
        if name == "permute" and x is not None:
            order = args[1] if len(args) == 2 and isinstance(args[1], (list, tuple)) else args[1:]
            return k if order and order[0] % x.dim() == 0 else UNKNOWN
        if name in {"unsqueeze", "squeeze", "expand", "expand_as", "repeat", "narrow", "select",
                    "index_select", "tril", "triu", "roll", "flip", "diff", "repeat_interleave"}:
            dim = args[1] if len(args) > 1 else kwargs.get("dim")
            if name in {"expand", "expand_as", "repeat", "tril", "triu"}:
                return k if aligned and x is not None and x.dim() == out.dim() and (
                    name != "repeat" or args[1] in (1,)) else UNKNOWN
            if name == "roll" or name == "flip":
                dims = _dims(args[2] if name == "roll" and len(args) > 2 else
                             args[1] if name == "flip" and len(args) > 1 else kwargs.get("dims"),
                             x.dim())
                return k if dims and 0 not in dims else UNKNOWN
            ok = isinstance(dim, int) and x is not None and dim % max(x.dim(), 1) != 0
            ok = ok and all(t is x for t, _ in src)
            return k if ok and out.shape[0] == x.shape[0] else UNKNOWN
        if name == "getitem" and x is not None:
            return k if _keeps_rows(x, args[1], src) and out.shape[0] == x.shape[0] else UNKNOWN
        return UNKNOWN


def _keeps_rows(x: Tensor, key: Any, src: list) -> bool:
    """Whether ``x[key]`` leaves dimension 0's rows whole and in place (no batch-derived index).

    A batch-free index tensor on dimension 0 keeps them when its values prove it: row b of it
    holds b only (transformers' masks index ``mask[batch_idx, kv_idx]``).
    """
    idx = key if isinstance(key, tuple) else (key,)
    if any(t is not x for t, _ in src):
        return False  # an index computed from the batch may pick rows across examples
    if not idx:
        return True
    first = idx[0]
    if isinstance(first, Tensor) and not first.is_floating_point() and first.dtype != torch.bool:
        n = x.shape[0]
        rows = torch.arange(n, device=first.device).view(-1, *[1] * (first.dim() - 1))
        adv = [i for i in idx if isinstance(i, (Tensor, list))]
        adjacent = all(isinstance(i, (Tensor, list)) for i in idx[: len(adv)])
        return (first.dim() > 0 and first.shape[0] == n and adjacent
                and bool((first == rows).all()))
    if first is Ellipsis:
        used = sum(i is not None and i is not Ellipsis for i in idx)
        return x.dim() > used
    if not (isinstance(first, slice) and first == slice(None)):
        return False
    # advanced indices are moved to the front when they are not adjacent: allow only one
    adv = [i for i in idx if isinstance(i, (Tensor, list))]
    return len(adv) <= 1
