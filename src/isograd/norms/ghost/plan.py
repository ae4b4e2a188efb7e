"""Which module owns each selected parameter, and which ghost rule it goes through.

`plan` gives the ghost engine its list of owners (raising when a module cannot be exact);
`unsupported_params` and `coverage` tell ``method="auto"`` and the user which parameters have
no dedicated rule.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

from torch import nn

from .._common import GhostUnsupported
from .rules import GENERIC, Rule, rule_for


@dataclass(eq=False)
class Owner:
    """A module owning selected parameters directly: attr -> selected name."""

    name: str
    module: nn.Module
    rule: Rule
    attrs: dict[str, str]


def plan(
    model: nn.Module, selected: Mapping[str, nn.Parameter], *, generic_ok: bool
) -> list[Owner]:
    """The modules owning selected parameters, each with its rule (raises when none is exact)."""
    ids = {id(p): n for n, p in selected.items()}
    owners = []
    for mname, m in model.named_modules():
        attrs = {a: ids[id(p)] for a, p in m._parameters.items() if p is not None and id(p) in ids}
        if not attrs:
            continue
        rule = rule_for(m)
        label = f"{mname or '<root>'} ({type(m).__name__})"
        if rule is None:
            if not generic_ok:
                raise GhostUnsupported(f"ghost has no rule for module {label}")
            rule = GENERIC
        reason = rule.refuse(m)
        if reason:
            raise GhostUnsupported(
                f"ghost cannot compute exact per-example gradients for module {label}: {reason}; "
                "use method='loop'"
            )
        owners.append(Owner(label, m, rule, attrs))
    return owners


def unsupported_params(model: nn.Module, selected: Mapping[str, nn.Parameter]) -> list[str]:
    """Names of selected parameters owned by a module with no dedicated exact rule."""
    ids = {id(p): n for n, p in selected.items()}
    bad: list[str] = []
    for m in model.modules():
        rule = rule_for(m)
        ok = rule is not None and rule.refuse(m) is None
        for p in m._parameters.values():
            if p is not None and id(p) in ids and not ok and ids[id(p)] not in bad:
                bad.append(ids[id(p)])
    return bad


def coverage(model: nn.Module, selected: Mapping[str, nn.Parameter]) -> dict[str, str]:
    """Which rule each selected parameter goes through ("a+b" for a parameter with two owners)."""
    ids = {id(p): n for n, p in selected.items()}
    used: dict[str, list[str]] = defaultdict(list)
    for m in model.modules():
        rule = rule_for(m)
        reason = rule.refuse(m) if rule is not None else None
        label = (rule or GENERIC).name if reason is None else f"refused: {reason}"
        for p in m._parameters.values():
            if p is not None and id(p) in ids:
                used[ids[id(p)]].append(label)
    return {n: "+".join(used[n]) for n in selected}
