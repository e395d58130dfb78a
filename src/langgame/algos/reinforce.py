"""REINFORCE with a leave-one-out group baseline (RLOO): eq. 9 with Q - b as the weight.

For each of the learner's actions, A_t = G_t - b, where G_t is the learner's reward-to-go
(its own rewards from t on, KL shaping included) and b is the mean return of the OTHER episodes
of the same group (same initial context) in which the learner played the same role; with
`baseline: game`, of the same game (a mixture's component) instead, with `batch` of the whole
batch. A baseline never mixes player-1 and player-2 samples. The loss is the one objective with w_t = A_t.
"""

from __future__ import annotations

import torch

from langgame.algos.base import Experience, Terms
from langgame.config import AlgoConfig
from langgame.objective import Forward


def loo_baseline(returns: torch.Tensor, groups: torch.Tensor, roles: torch.Tensor) -> torch.Tensor:
    """[N] -> [N]: mean return of the other episodes with the same (group, role); 0 if there is none."""
    key = groups * 3 + roles
    same = (key[:, None] == key[None, :]).float()
    others = same.sum(-1) - 1
    total = same @ returns - returns
    return torch.where(others > 0, total / others.clamp(min=1), torch.zeros_like(returns))


def reward_to_go(rewards: torch.Tensor) -> torch.Tensor:
    """[B, T] -> [B, T]: sum of rewards from t to the end of each row."""
    return rewards.flip(-1).cumsum(-1).flip(-1)


class Reinforce:
    needs_old_logp = False
    needs_values = False

    def __init__(self, cfg: AlgoConfig):
        self.cfg = cfg

    def advantages(self, exp: Experience) -> None:
        key = {"group": exp.groups, "game": exp.games, "batch": torch.zeros_like(exp.groups)}[self.cfg.baseline]
        baseline = loo_baseline(exp.returns, key, exp.roles)
        adv = (reward_to_go(exp.rewards) - baseline[:, None]) * exp.mask
        if self.cfg.scale_advantages:
            adv = adv / (adv[exp.mask > 0].std() + 1e-6)
        exp.advantages = adv

    def weights(self, fwd: Forward, exp: Experience, heads: dict, normaliser: float) -> tuple[torch.Tensor, Terms, dict[str, float]]:
        return exp.advantages * exp.mask, {}, {}
