"""Random small models for the differential fuzz test of the norm engines (test_fuzz.py).

A `Spec` names a token embedding, an optional position term, a stack of blocks and an output
head; `FuzzModel` builds it. The blocks cover what the ghost engine must either get exactly
right or refuse: Linear, LayerNorm/RMSNorm, Conv1d, hand-written and torch attention (batch
first or sequence first), weight sharing (one Linear called twice, a tied head), batch-free
tensors (``pos(arange(T))`` of shape [T, d], a Linear applied to one) and reshapes of the
batch (example-major ``[B·T, d]`` and the time-major ``h.transpose(0, 1).reshape(T·B, d)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

VOCAB = 7

BLOCKS = (
    "linear", "layernorm", "rmsnorm", "conv", "attn", "mha", "mha_seq_first", "shared",
    "batch_major", "time_major", "batch_free_linear",
)
POSITIONS = ("none", "batch_free", "broadcast", "expanded")
HEADS = ("linear", "tied")


@dataclass(frozen=True)
class Spec:
    """One random model and batch."""

    batch: int
    seq: int
    width: int
    heads: int
    position: str
    blocks: tuple[str, ...]
    head: str
    lengths: tuple[int, ...]
    left_pad: bool
    seed: int


class FuzzModel(nn.Module):
    """The model a `Spec` describes: ``forward(ids, mask) -> logits [B, T, V]``."""

    def __init__(self, spec: Spec) -> None:
        super().__init__()
        d, t, h = spec.width, spec.seq, spec.heads
        self.spec = spec
        self.tok = nn.Embedding(VOCAB, d)
        self.pos = nn.Embedding(t, d)
        self.layers = nn.ModuleList()
        for kind in spec.blocks:
            if kind in ("linear", "batch_major", "time_major", "batch_free_linear"):
                self.layers.append(nn.Linear(d, d))
            elif kind == "layernorm":
                self.layers.append(nn.LayerNorm(d))
            elif kind == "rmsnorm":
                self.layers.append(nn.RMSNorm(d))
            elif kind == "conv":
                self.layers.append(nn.Conv1d(d, d, 3, padding=1))
            elif kind == "attn":
                self.layers.append(nn.ModuleList([nn.Linear(d, d) for _ in range(4)]))
            elif kind in ("mha", "mha_seq_first"):
                self.layers.append(nn.MultiheadAttention(d, h, batch_first=kind == "mha"))
            else:  # "shared": every such block calls the one `shared` layer, twice
                self.layers.append(nn.Identity())
        self.shared = nn.Linear(d, d)
        self.head = nn.Linear(d, VOCAB, bias=False)
        if spec.head == "tied":
            self.head.weight = self.tok.weight
        with torch.no_grad():  # norm layers away from their identity start
            for m in self.modules():
                if isinstance(m, (nn.LayerNorm, nn.RMSNorm)):
                    m.weight.uniform_(0.5, 1.5)
                    if getattr(m, "bias", None) is not None:
                        m.bias.uniform_(-0.5, 0.5)

    def _attn(self, qkvo: nn.ModuleList, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.spec.heads
        q, k, v = (lin(x).view(b, t, h, d // h).transpose(1, 2) for lin in qkvo[:3])
        s = q @ k.transpose(-1, -2) / (d // h) ** 0.5
        causal = torch.ones(t, t, dtype=torch.bool).tril()
        ok = causal & mask.bool()[:, None, None, :]
        s = s.masked_fill(~ok, -1e9)  # finite: a fully padded row stays finite
        y = (s.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)
        return qkvo[3](y)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t = ids.shape
        d = self.spec.width
        h = self.tok(ids)
        if self.spec.position == "batch_free":
            h = h + self.pos(torch.arange(t))  # [T, d]: no batch dimension at all
        elif self.spec.position == "broadcast":
            h = h + self.pos(torch.arange(t)[None])  # [1, T, d]
        elif self.spec.position == "expanded":  # BART's positions: batch-free rows, B of them
            h = h + self.pos(torch.arange(t).expand(b, -1))
        for kind, layer in zip(self.spec.blocks, self.layers):
            if kind == "linear":
                h = torch.tanh(layer(h))
            elif kind in ("layernorm", "rmsnorm"):
                h = layer(h)
            elif kind == "conv":
                h = layer(h.transpose(1, 2)).transpose(1, 2)
            elif kind == "attn":
                h = h + self._attn(layer, h, mask)
            elif kind == "mha":
                h = h + layer(h, h, h, key_padding_mask=~mask.bool(), need_weights=False)[0]
            elif kind == "mha_seq_first":
                x = h.transpose(0, 1)
                y = layer(x, x, x, key_padding_mask=~mask.bool(), need_weights=False)[0]
                h = h + y.transpose(0, 1)
            elif kind == "shared":
                h = h + self.shared(torch.tanh(self.shared(h)))
            elif kind == "batch_major":
                h = torch.tanh(layer(h.reshape(b * t, d))).reshape(b, t, d)
            elif kind == "time_major":
                y = layer(h.transpose(0, 1).reshape(t * b, d))
                h = torch.tanh(y).reshape(t, b, d).transpose(0, 1)
            elif kind == "batch_free_linear":
                h = h + layer(self.pos(torch.arange(t)))  # a Linear on a [T, d] tensor
        return self.head(h)


def build(spec: Spec) -> tuple[FuzzModel, dict[str, torch.Tensor]]:
    """The float64 model and its padded batch (ids, mask) for `spec`."""
    torch.manual_seed(spec.seed)
    model = FuzzModel(spec).double()
    ids = torch.randint(1, VOCAB, (spec.batch, spec.seq))
    mask = torch.zeros(spec.batch, spec.seq, dtype=torch.long)
    for i, n in enumerate(spec.lengths):
        if spec.left_pad:
            mask[i, spec.seq - n:] = 1
        else:
            mask[i, :n] = 1
    return model, {"ids": ids * mask, "mask": mask}


def logprob(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum of next-token log-probs over each example's real tokens, [B]."""
    ids, mask = batch["ids"], batch["mask"]
    logits = model(ids, mask)
    logp = logits[:, :-1].log_softmax(-1).gather(2, ids[:, 1:, None])[..., 0]
    return (logp * (mask[:, 1:] * mask[:, :-1]).to(logp.dtype)).sum(1)
