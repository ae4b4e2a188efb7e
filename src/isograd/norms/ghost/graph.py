"""Walks over the autograd graph that the ghost engine needs before its backward pass.

One walk from the root gives (a) the nodes reachable from `fn`'s output, (b) how often each
selected parameter enters the graph (edges into its AccumulateGrad node), and (c) which tapped
nodes have no other tapped node below them: those become the `inputs` of the backward, so that
autograd runs exactly the activation-gradient part of the graph down to them and no
weight-gradient edge (whose AccumulateGrad lies on no path to an input) is ever computed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

_ACC = "AccumulateGrad"


def _children(node: Any) -> list[Any]:
    return [c for c, _ in node.next_functions if c is not None]


def walk(root: Any, tapped: set, params: set[int]) -> tuple[set, Counter, set]:
    """Reachable nodes, edges per selected parameter (by id), and the lowest tapped nodes.

    Args:
        root: `fn`'s output grad_fn.
        tapped: nodes that carry a module output the engine needs the gradient of.
        params: ids of the selected parameters.
    """
    below: dict[Any, bool] = {}  # node -> a tapped node is reachable strictly below it
    edges: Counter = Counter()
    stack: list[tuple[Any, list[Any], int]] = [(root, _children(root), 0)]
    seen = {root}
    while stack:  # iterative post-order: a node is finished after all its children
        node, kids, i = stack[-1]
        if i < len(kids):
            stack[-1] = (node, kids, i + 1)
            child = kids[i]
            if type(child).__name__ == _ACC:
                var = getattr(child, "variable", None)
                if var is not None and id(var) in params:
                    edges[id(var)] += 1
            if child not in seen:
                seen.add(child)
                stack.append((child, _children(child), 0))
            continue
        stack.pop()
        below[node] = any(c in tapped or below.get(c, False) for c in kids)
    lowest = {n for n in tapped if n in seen and not below[n]}
    return seen, edges, lowest


def local_edges(
    starts: Iterable[Any], first: int, last: int, reachable: set, params: set[int]
) -> Counter:
    """Edges into the selected parameters from nodes created during one module call.

    Nodes are attributed to the call by their autograd sequence number (assigned in creation
    order): only nodes numbered in ``[first, last)`` and reachable from the root are walked.
    """
    edges: Counter = Counter()
    stack = [n for n in starts if n in reachable and first <= n._sequence_nr() < last]
    seen = set(stack)
    while stack:
        node = stack.pop()
        for child in _children(node):
            if type(child).__name__ == _ACC:
                var = getattr(child, "variable", None)
                if var is not None and id(var) in params:
                    edges[id(var)] += 1
            elif child not in seen and child in reachable and first <= child._sequence_nr() < last:
                seen.add(child)
                stack.append(child)
    return edges


def feeds_another(starts: list[Any], first: int, last: int, reachable: set) -> bool:
    """Whether one of a call's output nodes lies below another inside the call (an output the
    module also used to compute another output: its tapped gradient then includes that use)."""
    inside = [n for n in starts if n in reachable and first <= n._sequence_nr() < last]
    targets = set(inside)
    for start in inside:
        stack, seen = [start], {start}
        while stack:
            for child in _children(stack.pop()):
                if child in targets and child is not start:
                    return True
                if child not in seen and child in reachable and first <= child._sequence_nr() < last:
                    seen.add(child)
                    stack.append(child)
    return False
