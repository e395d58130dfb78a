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
    """batch: the rendered episodes; mask: 1 on the learner's actions (the support m_t); rewards:
    the learner's r_t (each turn's reward on the learner's last action at or before that turn's
    end; KL shaping is added by Learner.score); returns [B]: R^i(z); groups [B]: episodes sharing
    an initial context; roles [B]: which player the learner was; temperature [B]: the sampling
    temperature of each row's policy (None: 1); games [B]: episodes of the same game (a mixture's
    component share an id); kl_support [B, T]: where the KL term applies (None: on the mask; e.g. not on
    the actions unlearning pushes away). ref_logp / old_logp / values are filled by
    Learner.score when the rule or the KL term needs them; behaviour_logp holds the log-probs the
    rollout engine recorded; advantages (the weights w_t of the one objective) and value_targets
    are filled by the rule. Behaviour cloning gives advantages directly (w_t = 1 on the support)."""

    batch: Batch
    mask: torch.Tensor
    rewards: torch.Tensor | None = None
    returns: torch.Tensor | None = None
    groups: torch.Tensor | None = None
    roles: torch.Tensor | None = None
    temperature: torch.Tensor | None = None
    behaviour_logp: torch.Tensor | None = None
    ref_logp: torch.Tensor | None = None
    old_logp: torch.Tensor | None = None
    values: torch.Tensor | None = None
    advantages: torch.Tensor | None = None
    value_targets: torch.Tensor | None = None
    games: torch.Tensor | None = None
    kl_support: torch.Tensor | None = None

    def rows(self, idx: list[int]) -> Experience:
        """A micro-batch of rows, trimmed to its longest sequence."""
        width = int(self.batch.attention[idx].sum(-1).max())  # tokens; actions are width - 1

        def cut(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x[idx][:, : width - 1] if x.dim() == 2 else x[idx]

        b = self.batch
        inputs = b.inputs and {k: v[idx][:, : width - 1] for k, v in b.inputs.items()}
        batch = Batch(b.ids[idx][:, :width], b.attention[idx][:, :width], cut(b.owner), cut(b.turn), cut(b.thought), inputs)
        return replace(self, batch=batch, **{f.name: cut(getattr(self, f.name)) for f in fields(self) if f.name != "batch"})

    def to(self, device: torch.device) -> Experience:
        """The same experience with every tensor on `device` (itself when they are there already)."""
        if self.mask.device == torch.device(device):
            return self
        move = lambda x: None if x is None else x.to(device)  # noqa: E731
        b = self.batch
        inputs = b.inputs and {k: v.to(device) for k, v in b.inputs.items()}
        batch = Batch(*(move(getattr(b, f.name)) for f in fields(Batch) if f.name != "inputs"), inputs)
        return replace(self, batch=batch, **{f.name: move(getattr(self, f.name)) for f in fields(self) if f.name != "batch"})

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
            padded = [v.new_full((v.shape[0], size, *v.shape[2:]), fill) for v in values]
            for p, v in zip(padded, values):
                p[:, : v.shape[1]] = v
            return torch.cat(padded)

        b = [p.batch for p in parts]
        inputs = b[0].inputs and {k: cat([x.inputs[k] for x in b], width - 1) for k in b[0].inputs}
        batch = Batch(cat([x.ids for x in b], width), cat([x.attention for x in b], width), cat([x.owner for x in b], width - 1),
                      cat([x.turn for x in b], width - 1, -1), cat([x.thought for x in b], width - 1), inputs)
        return Experience(batch, **{f.name: cat([getattr(p, f.name) for p in parts], width - 1) for f in fields(Experience) if f.name != "batch"})


# per-action regularisers of the one objective: {name: (coefficient, x [B, T])}; see objective.loss
Terms = dict[str, tuple[float, torch.Tensor]]


class Rule(Protocol):
    """A learning rule: advantages from experience, then the weights w_t of one micro-batch.

    A rule never sums a loss: Learner.update passes its weights and terms to objective.loss.
    """

    needs_old_logp: bool
    needs_values: bool

    def advantages(self, exp: Experience) -> None:
        """Fill exp.advantages (and exp.value_targets) in place, without gradients."""

    def weights(self, fwd: Forward, exp: Experience, heads: dict, normaliser: float) -> tuple[torch.Tensor, Terms, dict[str, float]]:
        """w_t [B, T] (no gradient, 0 off the mask), extra per-action terms, and metrics of one
        micro-batch divided by the step's support `normaliser` (they are summed over micro-batches)."""
