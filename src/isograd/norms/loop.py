"""Reference engine: one backward pass per example, the ground truth for the faster engines.

A single forward pass over the batch builds the graph; each example's scalar is then
back-propagated alone (``retain_graph``). Squared norms are accumulated per parameter as each
gradient arrives (a post-accumulate-grad hook that squares, sums in float64 and frees the
gradient), so no full gradient copy is ever held: peak memory stays near one batched
forward + backward. Tied parameters are handled by autograd itself: the hook sees the gradient
after all uses have been summed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from ._common import check_output, infer_batch_size, slice_batch
from .ghost.provenance import Provenance


def loop_sq_grad_norms(
    model: nn.Module,
    fn: Callable[[nn.Module, Any], torch.Tensor],
    batch: Any,
    selected: Mapping[str, nn.Parameter],
    by_param: bool,
) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None, torch.Tensor]:
    """Per-example squared gradient norms, one backward per example.

    Must run inside `model_state_guard` (selected params require grad, nothing else does).

    Returns:
        total [B] float64 on the CPU, with `by_param` a dict name -> [B] float64 that sums
        to it, and the mask [B] of examples whose output was not finite (their norms NaN).
    """
    size = infer_batch_size(batch)
    iso = Isolation(batch, size)
    with iso.forward():
        out = check_output(fn(model, batch), size)
    n = out.shape[0]
    names = list(selected)
    params = list(selected.values())
    # each parameter's sums stay on its own device (no sync per example; several devices under
    # a device_map work as is); they are gathered on the CPU once at the end
    acc = [torch.zeros(n, dtype=torch.float64, device=p.device) for p in params]
    current = [0]  # index of the example being back-propagated

    def make_hook(j: int):
        def hook(p: torch.Tensor) -> None:
            g = p.grad.detach()
            # squares in at least float32 (exact for half-precision values), summed in float64;
            # a complex entry z contributes |z|² (its real and imaginary parts squared)
            g = torch.view_as_real(g) if g.is_complex() else g
            sq = g.to(torch.promote_types(g.dtype, torch.float32)).square()
            acc[j][current[0]] += sq.sum(dtype=torch.float64)
            p.grad = None  # free at once: no full gradient copy is kept

        return hook

    handles = [p.register_post_accumulate_grad_hook(make_hook(j)) for j, p in enumerate(params)]
    try:
        finite = torch.isfinite(out.detach()).cpu()
        iso.start(~finite)
        for i in range(n):
            if not finite[i]:
                continue
            current[0] = i
            iso.current = i
            torch.autograd.backward(out[i], inputs=params, retain_graph=i < n - 1)
    finally:
        iso.close()
        for h in handles:
            h.remove()
        for p in params:
            p.grad = None
    per = torch.stack([a.cpu() for a in acc]) if acc else torch.zeros(0, n, dtype=torch.float64,
                                                                       device="cpu")
    per[:, ~finite] = float("nan")
    _rerun_spread(model, fn, batch, size, selected, per, out.detach(), finite)
    total = per.sum(0)
    return total, ({nm: per[j] for j, nm in enumerate(names)} if by_param else None), ~finite


def _rerun_spread(model: nn.Module, fn: Callable, batch: Any, size: int | None,
                  selected: Mapping[str, nn.Parameter], per: torch.Tensor, out: torch.Tensor,
                  finite: torch.Tensor) -> None:
    """Examples with a finite output but a non-finite norm, while other examples are not finite
    too: `Isolation` could not clean a tensor whose examples it cannot locate (a sequence-first
    layout, as inside nn.MultiheadAttention), so the NaN may have come from another example.
    Each is rerun alone, and its norms replace the batch's (in `per`, in place) when finite and
    when its output alone equals its output in the batch (the model does not mix examples).
    A float16 overflow of many examples is rerun too (alone it overflows again, and the
    float16 rescaling follows): a cost in that rare path only."""
    bad = finite & ~torch.isfinite(per).all(0)
    if size is None or int(bad.sum()) + int((~finite).sum()) < 2:
        return  # a single non-finite example: its own NaN, nothing spread
    # every one is rerun, those with NaN rows of their own too: a padded row's NaN that the
    # output masks out can leave the example's own gradient finite
    for i in torch.nonzero(bad).flatten().tolist():
        one = slice_batch(batch, size, i, i + 1)
        alone, parts, own = loop_sq_grad_norms(model, fn, one, selected, True)
        if own.any() or not torch.isfinite(alone).all():
            continue  # its own NaN/inf: it stays non-finite
        with torch.no_grad():
            again = fn(model, one).detach().to(out.device)
        # batched and single kernels may round differently: agreement to sqrt(eps)
        tol = torch.finfo(out.dtype).eps ** 0.5 if out.is_floating_point() else 1e-8
        if again.shape == (1,) and torch.allclose(again[0], out[i], rtol=tol, atol=0):
            per[:, i] = torch.stack([parts[nm][0] for nm in selected])


class Isolation:
    """Keeps one example's NaN/inf out of the other examples' gradients in the loop engine.

    Every backward runs through the whole batch's graph: a weight gradient sums over all rows,
    and a zero output gradient times a NaN activation of another example is NaN. The forward
    therefore saves its tensors through hooks; those proven to hold the examples on dimension 0
    (`Provenance`) are checked once, after the forward, for examples with non-finite rows; each
    later backward reads them with the rows of such examples (other than its own) set to zero.
    Exact: another example's rows get a zero gradient from this example's output anyway.
    Tensors not proven example-major are read as saved (a sequence-first layout, as inside
    nn.MultiheadAttention): a NaN there may still spread. `_rerun_spread` then reruns each
    example it reached alone; one whose output alone differs from its output in the batch (the
    model mixes examples) keeps its NaN, and the warning names every example whose norm is not
    finite.
    """

    def __init__(self, batch: Any, size: int | None) -> None:
        self.prov = Provenance(batch, size) if size else None
        self.size = size or 0
        self.saved: list[list[Any]] = []  # [tensor, cleaned copy or None, version, op tag]
        if self.prov is not None:
            self.prov.saved = self.saved
        self.dirty: torch.Tensor | None = None
        self.current = -1

    @contextlib.contextmanager
    def forward(self) -> Iterator[None]:
        if self.prov is None:
            yield
            return
        with self.prov, torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack):
            yield

    def _pack(self, t: torch.Tensor) -> list[Any]:
        # saved-tensor hooks bypass autograd's in-place check: the version is checked here
        entry = [t, None, t._version, None]  # the last: the saving op's tag (`Provenance`)
        self.saved.append(entry)
        return entry

    def _rows(self, entry: list[Any]) -> torch.Tensor | None:
        """The saved tensor as [B, -1] when it is example-major (its own tag, else that of the
        op that saved it, known once the op has returned)."""
        t = entry[0]
        k = self.prov.tag(t) if self.prov is not None else None
        k = entry[3] if k is None else k
        if not k or t.dim() == 0 or t.shape[0] != self.size * k:
            return None
        if not (t.is_floating_point() or t.is_complex()):
            return None
        return t.reshape(self.size, -1)

    def start(self, bad_out: torch.Tensor) -> None:
        """After the forward: the examples whose outputs or example-major rows are not finite."""
        dirty = bad_out.clone()
        for entry in self.saved:
            rows = self._rows(entry)
            if rows is not None:
                dirty |= ~torch.isfinite(rows).all(1).cpu()
        self.dirty = dirty if dirty.any() else None
        if self.dirty is None:
            self.saved.clear()

    def _unpack(self, entry: list[Any]) -> torch.Tensor:
        t = entry[0]
        if t._version != entry[2]:
            raise RuntimeError(
                "one of the variables needed for gradient computation has been modified by an "
                f"inplace operation: a tensor of shape {list(t.shape)} was saved at version "
                f"{entry[2]} and is now at version {t._version}"
            )
        if self.dirty is None:
            return t
        rows = self._rows(entry)
        if rows is None:
            return t
        own = 0 <= self.current < self.size and bool(self.dirty[self.current])
        if entry[1] is not None and not own:
            return entry[1]
        drop = self.dirty.clone()
        if own:
            drop[self.current] = False
        clean = torch.where(drop.to(t.device).unsqueeze(1), torch.zeros_like(rows), rows)
        clean = clean.reshape(t.shape)
        if not own:
            entry[1] = clean  # the same for every clean example's backward
        return clean

    def close(self) -> None:
        self.saved.clear()
