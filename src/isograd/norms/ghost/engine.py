"""The ghost engine: exact per-example squared gradient norms of a whole batch in one backward.

1. Forward hooks on every module that owns a selected parameter record each call: what its rule
   needs (references to inputs, token ids) and the autograd edge of each output (taken at once,
   so later in-place ops on the output cannot change which gradient is seen).
2. One walk of the graph checks that every use of a selected parameter happened inside the
   forward of a module that owns it (else the number would silently miss a use: refused), and
   finds the lowest tapped nodes.
3. One backward with ``inputs`` = those lowest edges runs only activation gradients: no weight
   gradient is ever computed. Pre-hooks on the tapped nodes receive each output gradient as the
   backward reaches it; the rule turns (captured inputs, output gradient) into factors, their
   norms (and cross terms between uses of a tied parameter) are accumulated, and both are freed.

Assumption (as for every batched per-example method): example i's output depends only on
example i, with examples on dimension 0 of every layer's input and output. That holds for
standard models in eval mode (which `sq_grad_norms` enforces); a `fn` that mixes examples,
or a sequence-first layout, is not detected in general: use ``method="loop"`` for those.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.graph import get_gradient_edge
from torch.utils._pytree import tree_flatten

from .._common import (
    GhostUnsupported,
    check_output,
    infer_batch_size,
    memory_budget,
)
from . import factors as fx
from . import generic
from .graph import feeds_another, local_edges, walk
from .layout import BROADCAST, Layout, classify, expand_output
from .plan import Owner, plan
from .provenance import Provenance


@dataclass(eq=False)
class _Call:
    owner: Owner
    ctx: Any
    grads: list[Tensor | None]
    taps: list[tuple[int, Any]]  # (index among tensor outputs, GradientEdge)
    first: int
    last: int
    layout: Layout
    params: dict[int, str]  # id of each selected parameter as the forward used it -> name
    versions: list[tuple[Tensor, int]]  # captured tensors and their versions at capture
    pending: int = 0
    done: bool = False


@dataclass(eq=False)
class _Tied:
    """Cross-term bookkeeping of one parameter with several uses."""

    done: list[tuple[_Call, str]] = field(default_factory=list)
    partials: dict[tuple[int, int], fx.Partial] = field(default_factory=dict)


_PROBE = torch.empty(0, device="cpu", requires_grad=True)


def _seq() -> int | None:
    """The autograd sequence number the next node will get (None under no_grad)."""
    view = _PROBE.view(0)
    return None if view.grad_fn is None else view.grad_fn._sequence_nr() + 1


class _Run:
    """State of one ghost call: recorded module calls, accumulated norms, hook handles."""

    def __init__(self, owners: list[Owner], names: list[str], budget: int) -> None:
        self.owners = owners
        self.budget = budget
        self.prov: Provenance | None = None  # which tensors come from the batch, and how
        self.index = {n: j for j, n in enumerate(names)}
        self.recording = True
        self.calls: list[_Call] = []
        self.starts: dict[int, list[int | None]] = defaultdict(list)
        self.handles: list[Any] = []
        self.per: Tensor | None = None
        self.batch = 0
        self.uses: dict[str, list[tuple[_Call, str]]] = {}
        self.tied: dict[str, _Tied] = {}
        self.grams = fx.GramCache()

    # forward ---------------------------------------------------------------------------
    def install(self) -> None:
        for owner in self.owners:
            m = owner.module
            self.handles.append(m.register_forward_pre_hook(self._pre(owner), with_kwargs=True))
            self.handles.append(m.register_forward_hook(self._post(owner), with_kwargs=True))

    def _pre(self, owner: Owner) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if self.recording:
                self.starts[id(owner)].append(_seq())

        return hook

    def _post(self, owner: Owner) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            if not self.recording:
                return
            stack = self.starts[id(owner)]
            first = stack.pop() if stack else None
            tensors = [x for x in tree_flatten(output)[0] if isinstance(x, Tensor)]
            taps = [(j, get_gradient_edge(x)) for j, x in enumerate(tensors) if x.requires_grad]
            if not taps or first is None:
                return None  # no differentiable output (e.g. under no_grad): no gradient here
            layout = classify(owner.name, owner.rule.rows, args, kwargs, output, self.batch,
                              self.prov)
            ctx = layout.ctx(owner.rule.capture(module, args, kwargs, output))
            versions = [(t, t._version) for t in tree_flatten(ctx)[0] if isinstance(t, Tensor)]
            new = None
            if layout.k == BROADCAST:  # each example's output gradient then has its own row
                new = expand_output(output, self.batch)
                tensors = [x for x in tree_flatten(new)[0] if isinstance(x, Tensor)]
                taps = [(j, get_gradient_edge(x)) for j, x in enumerate(tensors) if x.requires_grad]
            last = _seq() or first  # nodes of this call (the expand too) are in [first, last)
            # FSDP2 swaps in unsharded tensors for the forward: the graph holds those
            used = {id(module._parameters[a]): n for a, n in owner.attrs.items()}
            self.calls.append(
                _Call(owner, ctx, [None] * len(tensors), taps, first, last, layout, used,
                      versions))
            return new

        return hook

    # graph -----------------------------------------------------------------------------
    def prepare(self, out: Tensor, selected: Mapping[str, nn.Parameter]) -> list[Any]:
        """Check parameter uses, hook tapped nodes; return the backward's input edges."""
        pid = {id(p): n for n, p in selected.items()}
        for c in self.calls:
            pid.update(c.params)
        by_node: dict[Any, list[tuple[_Call, int, int]]] = defaultdict(list)
        for c in self.calls:
            for j, edge in c.taps:
                by_node[edge.node].append((c, j, edge.output_nr))
        reachable, edges, lowest = walk(out.grad_fn, set(by_node), set(pid))
        local: Counter = Counter()
        for c in self.calls:
            own = set(c.params)
            local.update(
                local_edges([e.node for _, e in c.taps], c.first, c.last, reachable, own)
            )
        for i, n in pid.items():
            if edges[i] != local[i]:
                owners = [o.name for o in self.owners if n in o.attrs.values()]
                raise GhostUnsupported(
                    f"ghost: parameter {n!r} enters the graph {edges[i]} time(s) but "
                    f"{local[i]} time(s) inside the forward of the module(s) owning it "
                    f"({', '.join(owners)}); a use outside them (e.g. a parent or fn using the "
                    "tensor directly) has no rule. Use method='loop'"
                )
        self.calls = [c for c in self.calls if any(e.node in reachable for _, e in c.taps)]
        for c in self.calls:
            nodes = [e.node for _, e in c.taps]
            if len(set(nodes)) > 1 and feeds_another(nodes, c.first, c.last, reachable):
                raise GhostUnsupported(
                    f"module {c.owner.name} returns a tensor that it also used to compute "
                    "another of its outputs (e.g. attention weights): the gradient reaching "
                    "that output includes the internal use, counted twice. Use method='loop'"
                )
        for c in self.calls:
            c.pending = sum(e.node in reachable for _, e in c.taps)
            for a, n in c.owner.attrs.items():
                self.uses.setdefault(n, []).append((c, a))
        self.tied = {n: _Tied() for n, u in self.uses.items() if len(u) > 1}
        by_edge: dict[tuple[Any, int], list[tuple[_Call, int]]] = defaultdict(list)
        edge_of: dict[tuple[Any, int], Any] = {}
        for c in self.calls:
            for j, e in c.taps:
                by_edge[(e.node, e.output_nr)].append((c, j))
                edge_of[(e.node, e.output_nr)] = e
        inputs, self.lowest = [], []
        for key, taps in by_edge.items():
            if key[0] in lowest:  # captured by the backward itself: its result
                self.lowest.append(taps)
                inputs.append(edge_of[key])
        for node, taps in by_node.items():
            if node in reachable and node not in lowest:
                self.handles.append(node.register_prehook(self._arrive_hook(taps)))
        return inputs

    def _arrive_hook(self, taps: list[tuple[_Call, int, int]]) -> Callable:
        def hook(grad_outputs: tuple[Tensor | None, ...]) -> None:
            for call, j, nr in taps:
                self.arrive(call, j, grad_outputs[nr])

        return hook

    # backward --------------------------------------------------------------------------
    def arrive(self, call: _Call, j: int, g: Tensor | None) -> None:
        call.grads[j] = g
        call.pending -= 1
        if call.pending == 0:
            self.process(call)

    def process(self, call: _Call) -> None:
        if call.done:
            return
        call.done = True
        with torch.no_grad():  # norms only: never part of any graph
            self._process(call)

    def _process(self, call: _Call) -> None:
        owner = call.owner
        changed = [list(t.shape) for t, v in call.versions if t._version != v]
        if changed:  # the rule would read the new values, not those the forward used
            raise GhostUnsupported(
                f"a tensor module {owner.name} read in the forward (shape {changed[0]}) was "
                "modified in place afterwards; use method='loop' (or avoid the in-place op)"
            )
        call.grads = [call.layout.grad(g) for g in call.grads]
        for g in call.grads:
            if g is not None and (g.dim() == 0 or g.shape[0] != self.batch):
                raise GhostUnsupported(
                    f"ghost needs the examples on dimension 0 of every layer's output; module "
                    f"{owner.name} produced shape {list(g.shape)} for a batch of {self.batch}. "
                    "Use method='loop'"
                )
        got: dict[str, fx.Factor] = {}
        if any(g is not None for g in call.grads):
            got = owner.rule.factors(owner.module, call.ctx, call.grads, list(owner.attrs))
        for a, n in owner.attrs.items():
            self._accumulate(n, call, a, got.get(a))
        call.ctx, call.grads = None, []

    def _accumulate(self, name: str, call: _Call, attr: str, f: fx.Factor | None) -> None:
        row = self.per[self.index[name]]
        tied = self.tied.get(name)
        if tied is None:
            if f is not None:
                row += self._sq_norm(f, call).to(row.device)
            return
        # a partial prepared by an earlier use holds a Gram over this use's rows as the forward
        # saw them: finish it on the uncompacted factor, whose rows still line up with it
        full = f
        if isinstance(f, fx.Outer):
            f = fx.compact(f)  # once, for its norm and the cross terms prepared below
        if f is not None:
            row += self._sq_norm(f, call).to(row.device)
        for dc, _ in tied.done:
            p = tied.partials.pop((id(dc), id(call)), None)
            if p is not None and full is not None:
                self._cross_budget(p.factor, full, call)
                row += 2 * fx.finish(p, full).to(row.device)
        tied.done.append((call, attr))
        if f is None:
            return
        for wc, wa in self.uses[name]:
            if wc is call or wc.done:
                continue
            fw = wc.owner.rule.factors(wc.owner.module, wc.ctx, None, [wa]).get(wa)
            if fw is not None:
                self._cross_budget(f, fw, call)
            tied.partials[(id(call), id(wc))] = fx.Partial(f) if fw is None else fx.partial(f, fw)

    def _cross_budget(self, a: fx.Factor, b: fx.Factor, call: _Call) -> None:
        """Refuse a tied parameter's cross term whose transient terms exceed the budget."""
        need = fx.cross_bytes(a, b)
        if need > self.budget:
            raise GhostUnsupported(
                f"ghost would need {need:,} bytes for the cross term between two uses of a tied "
                f"parameter of module {call.owner.name}, over the memory budget of "
                f"{self.budget:,} bytes (memory_budget= or $ISOGRAD_MEMORY_BUDGET)"
            )

    def _sq_norm(self, f: fx.Factor, call: _Call) -> Tensor:
        """‖G_b‖² [B], over slices of examples that keep the transient terms under the budget.

        A CUDA out-of-memory error halves the slice and retries, down to one example.
        """
        need = fx.bytes_per_example(f)
        if need > self.budget:
            raise GhostUnsupported(
                f"ghost would need {need:,} bytes per example for the Gram or materialised "
                f"terms of module {call.owner.name}, over the memory budget of "
                f"{self.budget:,} bytes (memory_budget= or $ISOGRAD_MEMORY_BUDGET)"
            )
        step = max(1, min(self.batch, self.budget // max(need, 1)))
        while True:
            try:
                if step >= self.batch:
                    return fx.sq_norm(f, self.grams)
                self.grams.items.clear()  # cached Grams are of whole-batch tensors
                parts = [fx.sq_norm(fx.take(f, i, i + step), None)
                         for i in range(0, self.batch, step)]
                return torch.cat(parts)
            except torch.OutOfMemoryError:
                if step == 1:
                    raise
                step = max(1, min(step, self.batch) // 2)
                self.grams.items.clear()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()

    def finish(self, grads: tuple[Tensor | None, ...]) -> None:
        for taps, g in zip(self.lowest, grads):
            for call, j in taps:
                self.arrive(call, j, g)
        for c in self.calls:
            if not c.done:
                self.process(c)

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
        self.calls.clear()
        self.uses.clear()
        self.tied.clear()
        self.grams.items.clear()


def ghost_sq_grad_norms(
    model: nn.Module,
    fn: Callable[[nn.Module, Any], Tensor],
    batch: Any,
    selected: Mapping[str, nn.Parameter],
    by_param: bool,
    budget: int | None = None,
) -> tuple[Tensor, dict[str, Tensor] | None, Tensor]:
    """Per-example squared gradient norms, all examples in one weightless backward.

    Must run inside `model_state_guard` (selected params require grad, nothing else does).
    Module kinds without a dedicated rule take the generic vjp rule (see `rules.py`).

    Args:
        budget: bytes one layer's Gram or materialised terms may take at once (examples are
            then processed in slices); None: `memory_budget()`'s default.

    Returns:
        total [B] float64 on the CPU, with `by_param` a dict name -> [B] float64 that sums
        to it, and the mask [B] of examples whose output was not finite (their norms NaN).
        Examples are independent here: one example's NaN leaves the others' norms exact.

    Raises:
        GhostUnsupported: on any condition under which ghost cannot give an exact number.
    """
    names = list(selected)
    run = _Run(plan(model, selected, generic_ok=True), names, memory_budget(budget))
    token = generic.BUDGET.set(run.budget)
    try:
        run.install()
        run.batch = infer_batch_size(batch)  # the layouts need it during the forward
        run.prov = Provenance(batch, run.batch)
        with run.prov:
            out = check_output(fn(model, batch), run.batch)
        for label, use in run.prov.misaligned():
            raise GhostUnsupported(
                f"ghost needs the examples on dimension 0 of every layer's output; module "
                f"{label} produced a batch-free output with B rows that is not used row by row "
                f"with the examples ({use}: e.g. a [T, d] position table at B == T). "
                "Use method='loop'"
            )
        run.recording = False
        n = out.shape[0]
        run.batch = n
        run.per = torch.zeros(len(names), n, dtype=torch.float64, device=out.device)
        finite = torch.isfinite(out.detach())
        inputs = run.prepare(out, selected) if out.grad_fn is not None else []
        grads: tuple[Tensor | None, ...] = ()
        if inputs:
            grads = torch.autograd.grad(
                out, inputs=inputs, grad_outputs=finite.to(out.dtype), allow_unused=True
            )
        run.finish(grads)
        del out, grads
    finally:
        generic.BUDGET.reset(token)
        run.close()
    per = run.per.cpu()
    bad = ~finite.cpu()
    per[:, bad] = float("nan")
    total = per.sum(0)
    return total, ({nm: per[j] for j, nm in enumerate(names)} if by_param else None), bad
