"""FSDP2 model placement under torchrun: each rank holds 1/world of the weights.

The engines stay rank-agnostic: under FSDP2 each rank computes its own examples' norms
(`isograd.norms` refuses what is not exact under FSDP2).
"""

from __future__ import annotations

from typing import Any

from .._choice import Choice
from ..rows.ranks import Rank, launched


class Shard(Choice):
    """How the model is placed across the ranks of a torchrun job."""

    NONE = "none"
    """Each rank holds a whole copy (data parallel only)."""
    FSDP = "fsdp"
    """FSDP2 ``fully_shard`` per decoder layer and at the root: each rank holds 1/world of the
    weights; the ranks still score different inputs."""


def shard_model(model: Any, rank: Rank, device: str = "cpu") -> Any:
    """FSDP2: ``fully_shard`` each decoder layer (the model's ``_no_split_modules``) and the root.

    Args:
        model: the whole model, e.g. loaded on the CPU; FSDP2 moves each shard to `device`.
        rank: this process's place (`setup`).
        device: the run's device ("cpu", "cuda", "cuda:<i>"): the mesh's device type.

    Raises:
        ValueError: outside a torchrun job, or when the model names no layer class to shard.
    """
    if not launched():
        raise ValueError("--shard fsdp needs a torchrun job: torchrun --nproc-per-node N "
                         "--no-python isograd ...")
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    kinds = set(getattr(model, "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__ in kinds]
    if not layers:
        raise ValueError(f"--shard fsdp: {type(model).__name__} names no decoder layer class "
                         "(_no_split_modules); use --shard none")
    mesh = init_device_mesh(str(device).split(":")[0], (rank.world,))
    for m in layers:
        fully_shard(m, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model
