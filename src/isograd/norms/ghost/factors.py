"""Per-example gradients in factored form, and their exact squared norms and inner products.

A rule never forms a weight gradient. It describes example b's gradient of one parameter as

* `Outer`: ``G_b = Σ_t L[b,t] ⊗ R[b,t]`` for a parameter viewed as a matrix [n, m]
  (Linear: L = output grads, R = inputs; Embedding: L = one-hot token ids, R = output grads;
  conv: R = unfolded input patches), or
* `Dense`: the materialised per-example gradient [B, *shape] (biases, norm layers, generic rule).

‖G_b‖² of an `Outer` is computed either from Gram matrices, Σ_{t,s} (L_t·L_s)(R_t·R_s) at
O(T²(n+m)), or by materialising Lᵀ R at O(T·n·m): whichever is cheaper for the shapes. Rows t
where either side is zero (positions that carry no gradient, padding) are dropped first, so an
answer span of k tokens costs O(k²) rather than O(T²). A parameter used several times (tied
embedding = output head, a module called twice) has ``G_b = Σ_u G_b^u``: its squared norm needs
the inner products between uses, which the same Gram algebra gives without any V×d matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# compact rows only when it removes enough of them to pay for the gather
_COMPACT_BELOW = 0.75


@dataclass(frozen=True)
class Index:
    """One-hot rows given by ids [B, T] into a dimension of size `n`; id -1 marks a dropped row."""

    ids: Tensor
    n: int


Side = Tensor | Index


@dataclass(frozen=True)
class Outer:
    """``G_b = Σ_t left[b,t] ⊗ right[b,t]``; a side is None while its gradient is not known yet.

    `grad` names the side that holds output gradients ("left" or "right"): rows where it is
    zero (positions that do not influence the output) are dropped before any Gram matrix.
    """

    left: Side | None
    right: Side | None
    grad: str = "left"
    compacted: bool = False

    def sides(self) -> tuple[Side, Side]:
        """(gradient side, other side)."""
        return (self.left, self.right) if self.grad == "left" else (self.right, self.left)


@dataclass(frozen=True)
class Dense:
    """The materialised per-example gradient, [B, *param.shape]."""

    grad: Tensor


Factor = Outer | Dense


def work_dtype(t: Tensor) -> torch.dtype:
    """float32 for half-precision tensors (their Grams and sums lose too much), else as is."""
    return torch.promote_types(t.dtype, torch.float32)


def _dense(side: Side, dtype: torch.dtype) -> Tensor:
    if isinstance(side, Index):
        ids = side.ids
        out = torch.zeros(*ids.shape, side.n, dtype=dtype, device=ids.device)
        ok = ids >= 0
        out.scatter_(2, ids.clamp_min(0).unsqueeze(2), ok.unsqueeze(2).to(dtype))
        return out
    return side.to(dtype)


def _nonzero_rows(side: Side) -> Tensor:
    if isinstance(side, Index):
        return side.ids >= 0
    lo, hi = torch.aminmax(side, dim=-1)  # one pass, exact (no squares that could underflow)
    return (lo != 0) | (hi != 0)


def _take_rows(side: Side, order: Tensor, valid: Tensor) -> Side:
    if isinstance(side, Index):
        ids = side.ids.gather(1, order)
        return Index(torch.where(valid, ids, torch.full_like(ids, -1)), side.n)
    rows = side.gather(1, order.unsqueeze(2).expand(-1, -1, side.shape[2]))
    return rows * valid.unsqueeze(2).to(rows.dtype)


def _selection(keep: Tensor) -> tuple[Tensor, Tensor] | None:
    """Row order putting kept rows first, and the validity mask; None when not worth it."""
    t = keep.shape[1]
    counts = keep.sum(1)
    k = int(counts.max()) if t else 0
    if k > _COMPACT_BELOW * t:
        return None
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :k]
    valid = torch.arange(k, device=keep.device).unsqueeze(0) < counts.unsqueeze(1)
    return order, valid


def compact(f: Outer, keep: Tensor | None = None) -> Outer:
    """Drop rows t where the gradient side is zero (they contribute nothing); exact."""
    if f.compacted:
        return f
    if keep is None:
        keep = _nonzero_rows(f.sides()[0])
    sel = _selection(keep)
    if sel is None:
        return Outer(f.left, f.right, f.grad, True)
    return Outer(_take_rows(f.left, *sel), _take_rows(f.right, *sel), f.grad, True)


def _width(side: Side) -> int:
    return side.n if isinstance(side, Index) else side.shape[2]


def _on(side: Side, device: torch.device) -> Side:
    """`side` on `device` (two uses of a tied parameter may sit on two devices)."""
    if isinstance(side, Index):
        return side if side.ids.device == device else Index(side.ids.to(device), side.n)
    return side if side.device == device else side.to(device)


def _device(side: Side) -> torch.device:
    return side.ids.device if isinstance(side, Index) else side.device


def gram(a: Side, b: Side, dtype: torch.dtype) -> Tensor:
    """K[b, t, s] = a[b,t] · b[b,s], [B, Ta, Tb]; one-hot sides by comparison or gathering.

    On `a`'s device (`b` is moved there when the two sit on different devices)."""
    b = _on(b, _device(a))
    if isinstance(a, Index) and isinstance(b, Index):
        eq = (a.ids.unsqueeze(2) == b.ids.unsqueeze(1)) & (a.ids >= 0).unsqueeze(2)
        return eq.to(dtype)
    if isinstance(a, Index):
        return gram(b, a, dtype).transpose(1, 2)
    if isinstance(b, Index):
        ids = b.ids.clamp_min(0).unsqueeze(1).expand(-1, a.shape[1], -1)
        k = a.to(dtype).gather(2, ids)
        return k * (b.ids >= 0).unsqueeze(1).to(dtype)
    return torch.bmm(a.to(dtype), b.to(dtype).transpose(1, 2))


def _materialise(f: Outer, dtype: torch.dtype) -> Tensor:
    return torch.bmm(_dense(f.left, dtype).transpose(1, 2), _dense(f.right, dtype))


def _dtype_of(*sides: Side | Tensor) -> torch.dtype:
    dts = [work_dtype(s) for s in sides if isinstance(s, Tensor)]
    out = dts[0] if dts else torch.float32
    for d in dts[1:]:
        out = torch.promote_types(out, d)
    return out


def _sum64(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).sum(1, dtype=torch.float64)


def _gram_is_cheaper(t: int, left: Side, right: Side) -> bool:
    # multiply-adds: Gram matrices T²·(n+m) (a one-hot side only compares ids) vs T·n·m
    dense = sum(_width(s) for s in (left, right) if isinstance(s, Tensor))
    return t * t * max(dense, 1) <= t * _width(left) * _width(right)


def take(f: Factor, start: int, stop: int) -> Factor:
    """The factor of examples ``start:stop`` only (a view: rows are examples)."""
    if isinstance(f, Dense):
        return Dense(f.grad[start:stop])

    def cut(s: Side | None) -> Side | None:
        if isinstance(s, Index):
            return Index(s.ids[start:stop], s.n)
        return None if s is None else s[start:stop]

    return Outer(cut(f.left), cut(f.right), f.grad, f.compacted)


def bytes_per_example(f: Factor) -> int:
    """Upper bound of the transient bytes `sq_norm` needs per example (before compaction)."""
    if isinstance(f, Dense):
        g = f.grad
        return 2 * (g.numel() // max(g.shape[0], 1)) * work_dtype(g).itemsize
    g, a = f.sides()
    size = _dtype_of(g, a).itemsize
    t = g.ids.shape[1] if isinstance(g, Index) else g.shape[1]
    if _gram_is_cheaper(t, g, a):
        return 3 * t * t * size  # two Grams [T, T] and their product
    one_hot = sum(t * _width(s) for s in (g, a) if isinstance(s, Index))
    return (2 * _width(g) * _width(a) + one_hot) * size  # Lᵀ R [n, m], its square


def cross_bytes(a: Factor, b: Factor) -> int:
    """Upper bound of the transient bytes ``inner(a, b)`` (or `partial` then `finish`) needs
    for the whole batch: two Gram matrices [B, Ta, Tb], or a materialised gradient and its
    product with a dense one."""
    sides = [s for f in (a, b) if isinstance(f, Outer) for s in (f.left, f.right)]
    dense = [f.grad for f in (a, b) if isinstance(f, Dense)]
    size = _dtype_of(*[s for s in sides if isinstance(s, Tensor)], *dense).itemsize
    if dense:
        return 3 * max(g.numel() for g in dense) * size
    n = next(s.ids.shape[0] if isinstance(s, Index) else s.shape[0]
             for s in sides if s is not None)

    def rows(f: Outer) -> int:
        s = f.left if f.left is not None else f.right
        return 0 if s is None else (s.ids.shape[1] if isinstance(s, Index) else s.shape[1])

    assert isinstance(a, Outer) and isinstance(b, Outer)
    return 2 * n * rows(a) * rows(b) * size


class GramCache:
    """Gram matrices of forward-side tensors shared by several layers (q/k/v read one input).

    Holds the tensors themselves, so an id cannot be reused while its entry lives.
    """

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self.items: list[tuple[tuple, Tensor, Tensor]] = []

    def gram(self, x: Tensor, dtype: torch.dtype) -> Tensor:
        # layers reading one input each get their own view of it: compare memory, not objects
        key = (x.data_ptr(), x.shape, x.stride(), x.dtype, dtype)
        for k, _, kx in self.items:
            if k == key:
                return kx
        kx = gram(x, x, dtype)
        self.items = [(key, x, kx), *self.items[: self.size - 1]]
        return kx


def sq_norm(f: Factor, cache: GramCache | None = None) -> Tensor:
    """‖G_b‖² for every example, float64 [B]."""
    if isinstance(f, Dense):
        return _sum64(f.grad.to(work_dtype(f.grad)).square())
    g, a = f.sides()
    dtype = _dtype_of(g, a)
    t = g.ids.shape[1] if isinstance(g, Index) else g.shape[1]
    if isinstance(g, Tensor) and (_width(g) >= 4 * _width(a) or not _gram_is_cheaper(t, g, a)):
        # a wide gradient side (an output head's logits) or the materialised form: one cheap
        # pass finds the rows to drop before the expensive product
        f = compact(f)
        g, a = f.sides()
        t = g.shape[1]
    if not _gram_is_cheaper(t, g, a):
        return _sum64(_materialise(f, dtype).square())
    kg = gram(g, g, dtype)
    sel = _selection(kg.diagonal(dim1=1, dim2=2) != 0) if isinstance(g, Tensor) else None
    if sel is not None:  # drop zero-gradient rows of the other side and of the Gram matrix
        order, valid = sel
        a = _take_rows(a, order, valid)
        rows = order.unsqueeze(2).expand(-1, -1, kg.shape[2])
        kg = kg.gather(1, rows).gather(2, order.unsqueeze(1).expand(-1, order.shape[1], -1))
    elif cache is not None and isinstance(a, Tensor):
        return _sum64(kg * cache.gram(a, dtype))
    return _sum64(kg * gram(a, a, dtype))


def _outer_dot_dense(f: Outer, d: Tensor) -> Tensor:
    dtype = _dtype_of(d, *(s for s in (f.left, f.right) if isinstance(s, Tensor)))
    d = d.to(_device(f.right))
    d = d.to(dtype).reshape(d.shape[0], _width(f.left), _width(f.right))
    if isinstance(f.left, Index):
        ids = f.left.ids
        rows = d.gather(1, ids.clamp_min(0).unsqueeze(2).expand(-1, -1, d.shape[2]))
        return _sum64(rows * f.right.to(dtype) * (ids >= 0).unsqueeze(2).to(dtype))
    return _sum64(_materialise(f, dtype) * d)


def inner(a: Factor, b: Factor) -> Tensor:
    """⟨G_b^a, G_b^b⟩ for every example, float64 [B] (two uses of the same parameter)."""
    if isinstance(a, Dense) and isinstance(b, Dense):
        dtype = _dtype_of(a.grad, b.grad)
        other = b.grad.reshape(a.grad.shape).to(a.grad.device, dtype)
        return _sum64(a.grad.to(dtype) * other)
    if isinstance(a, Dense):
        return _outer_dot_dense(b, a.grad)
    if isinstance(b, Dense):
        return _outer_dot_dense(a, b.grad)
    a, b = compact(a), compact(b)
    dtype = _dtype_of(a.left, a.right, b.left, b.right)
    return _sum64(gram(a.left, b.left, dtype) * gram(a.right, b.right, dtype))


@dataclass(frozen=True)
class Partial:
    """What a finished use keeps for its inner product with a use whose gradient is pending.

    For two `Outer` uses, the Gram of the sides already known for both (e.g. the output head's
    logit gradients gathered at the embedding's token ids, [B, T, T]) is computed at once, so
    the large side (the [B, T, V] logit gradient) can be freed; only the other side is kept.
    """

    factor: Factor
    known: Tensor | None = None  # Gram of the known sides, [B, T_done, T_pending]
    known_is_left: bool = True


def partial(done: Factor, pending: Factor) -> Partial:
    """Prepare ⟨done, pending⟩ given `pending`'s forward-time side (its other side is None)."""
    if not (isinstance(done, Outer) and isinstance(pending, Outer)):
        return Partial(done)
    done = compact(done)
    dtype = _dtype_of(done.left, done.right)
    if pending.left is not None:
        kept = Outer(None, done.right, done.grad)
        return Partial(kept, gram(done.left, pending.left, dtype), True)
    if pending.right is not None:
        kept = Outer(done.left, None, done.grad)
        return Partial(kept, gram(done.right, pending.right, dtype), False)
    return Partial(done)


def finish(p: Partial, pending: Factor) -> Tensor:
    """⟨done, pending⟩ once `pending`'s gradient is known, float64 [B]."""
    if p.known is None:
        return inner(p.factor, pending)
    assert isinstance(pending, Outer) and isinstance(p.factor, Outer)
    if p.known_is_left:
        dtype = _dtype_of(p.factor.right, p.known)
        other = gram(p.factor.right, pending.right, dtype)
    else:
        dtype = _dtype_of(p.factor.left, p.known)
        other = gram(p.factor.left, pending.left, dtype)
    return _sum64(p.known.to(dtype) * other)
