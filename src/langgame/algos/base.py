"""What a learning rule sees: the learner's view of judged episodes as tensors.

All [B, T] tensors are indexed by action position t (the action a_t = ids[:, t+1]), like Batch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Protocol

import torch

from langgame.objective import Batch, Forward


@dataclass
class Experience:
    """batch: the rendered episodes; mask: 1 on the learner's actions; rewards: the learner's r_t
    (each turn's reward on the learner's last action at or before that turn's end; KL shaping is
    added by the rule); returns [B]: R^i(z); groups [B]: episodes sharing an initial context;
    roles [B]: which player the learner was. ref_logp / old_logp / values are filled by the
    no-grad scoring pass when the rule or the KL term needs them; advantages and value_targets
    by the rule."""

    batch: Batch
    mask: torch.Tensor
    rewards: torch.Tensor
    returns: torch.Tensor
    groups: torch.Tensor
    roles: torch.Tensor
    ref_logp: torch.Tensor | None = None
    old_logp: torch.Tensor | None = None
    values: torch.Tensor | None = None
    advantages: torch.Tensor | None = None
    value_targets: torch.Tensor | None = None

    def rows(self, idx: list[int]) -> Experience:
        """A micro-batch of rows, trimmed to its longest sequence."""
        width = int(self.batch.attention[idx].sum(-1).max())  # tokens; actions are width - 1

        def cut(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x[idx][:, : width - 1] if x.dim() == 2 else x[idx]

        b = self.batch
        batch = Batch(b.ids[idx][:, :width], b.attention[idx][:, :width], cut(b.owner), cut(b.turn), cut(b.thought))
        return replace(self, batch=batch, **{f.name: cut(getattr(self, f.name)) for f in fields(self) if f.name != "batch"})


    @staticmethod
    def concat(parts: list[Experience]) -> Experience:
        """Rows of several experiences (e.g. both roles of a shared model), right-padded to one width."""
        if len(parts) == 1:
            return parts[0]
        width = max(p.batch.ids.shape[1] for p in parts)  # tokens; actions are width - 1

        def cat(values: list[torch.Tensor | None], size: int, fill: int = 0) -> torch.Tensor | None:
            if any(v is None for v in values):
                return None
            if values[0].dim() == 1:
                return torch.cat(values)
            return torch.cat([torch.nn.functional.pad(v, (0, size - v.shape[1]), value=fill) for v in values])

        b = [p.batch for p in parts]
        batch = Batch(cat([x.ids for x in b], width), cat([x.attention for x in b], width), cat([x.owner for x in b], width - 1),
                      cat([x.turn for x in b], width - 1, -1), cat([x.thought for x in b], width - 1))
        return Experience(batch, **{f.name: cat([getattr(p, f.name) for p in parts], width - 1) for f in fields(Experience) if f.name != "batch"})


class Rule(Protocol):
    """A learning rule: advantages from experience, then the loss of one micro-batch."""

    needs_old_logp: bool
    needs_values: bool

    def advantages(self, exp: Experience) -> None:
        """Fill exp.advantages (and exp.value_targets) in place, without gradients."""

    def loss(self, fwd: Forward, exp: Experience, heads: dict, normaliser: float) -> tuple[torch.Tensor, dict[str, float]]:
        """Policy-gradient loss of one micro-batch (divided by `normaliser`) and its metrics."""
