"""Behaviour cloning (paper eqs. 7 and 8): the one objective with fixed weights.

The weighting (objective.pretrain_weights: w_t = 1 on both players' tokens; sft_weights: on the
learner's only) is put into exp.advantages when the experience is built, so BC is policy
gradient with an advantage of 1 on every cloned action: the same Learner.update serves both.
"""

from __future__ import annotations

import torch

from langgame.algos.base import Experience, Terms
from langgame.objective import Forward


class BehaviourCloning:
    needs_old_logp = False
    needs_values = False

    def __init__(self, cfg=None):
        self.cfg = cfg

    def advantages(self, exp: Experience) -> None:
        """The weights were given by the weighting; nothing to estimate."""

    def weights(self, fwd: Forward, exp: Experience, heads: dict, normaliser: float) -> tuple[torch.Tensor, Terms, dict[str, float]]:
        return exp.advantages, {}, {}
