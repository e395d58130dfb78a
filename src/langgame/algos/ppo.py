"""PPO (Schulman et al. 2017) with a value head and GAE: the paper's value functions (section 5.2).

The learner's own actions are its time steps; the other player's tokens are transitions of the
environment it induces (paper Fig. 3). The value head V(s_t) reads the policy's last hidden state.
The clipped surrogate min(rho A, clip(rho) A) has the gradient A rho grad log pi where it is not
clipped and 0 where it is, so PPO is the one objective with w_t = stopgrad(A_t rho_t [not clipped]).
"""

from __future__ import annotations

import torch

from langgame.algos.base import Experience, Terms
from langgame.config import AlgoConfig
from langgame.objective import Forward


class ValueHead(torch.nn.Module):
    """V(s_t) = w . h_t + b on the policy's final hidden state; zero-initialised. [B, T, H] -> [B, T]."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.float()).squeeze(-1)


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over the masked steps of each row. All [B, T].

    delta_t = r_t + gamma V(next learner step) - V_t, with V = 0 after the last step;
    A_t = sum_k (gamma lam)^k delta_{t+k}. Returns (advantages, value targets A + V), 0 off the mask.
    """
    adv = torch.zeros_like(rewards)
    for b in range(rewards.shape[0]):
        steps = torch.nonzero(mask[b] > 0).flatten().tolist()
        next_value, running = 0.0, 0.0
        for t in reversed(steps):
            delta = float(rewards[b, t]) + gamma * next_value - float(values[b, t])
            running = delta + gamma * lam * running
            adv[b, t] = running
            next_value = float(values[b, t])
    return adv, (adv + values) * mask


def clipped_weights(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, clip: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """w_t = A rho [rho A <= clip(rho) A], detached; also the surrogate min(rho A, clip(rho) A) and the clipped mask."""
    ratio = torch.exp(logp.detach() - old_logp)
    unclipped, clipped = ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv
    active = unclipped <= clipped
    return (adv * ratio * active).detach(), torch.minimum(unclipped, clipped), ~active


class PPO:
    needs_old_logp = True
    needs_values = True

    def __init__(self, cfg: AlgoConfig):
        self.cfg = cfg

    def advantages(self, exp: Experience) -> None:
        adv, exp.value_targets = gae(exp.rewards, exp.values, exp.mask, self.cfg.gamma, self.cfg.gae_lambda)
        if self.cfg.scale_advantages:
            on = exp.mask > 0
            adv = torch.where(on, (adv - adv[on].mean()) / (adv[on].std() + 1e-6), adv)
        exp.advantages = adv

    def weights(self, fwd: Forward, exp: Experience, heads: dict, normaliser: float) -> tuple[torch.Tensor, Terms, dict[str, float]]:
        m = exp.mask
        w, surrogate, clipped = clipped_weights(fwd.logp, exp.old_logp, exp.advantages, self.cfg.clip)
        values = heads["value"](fwd.hidden)
        v_clipped = exp.values + (values - exp.values).clamp(-self.cfg.value_clip, self.cfg.value_clip)
        err = 0.5 * torch.maximum((values - exp.value_targets) ** 2, (v_clipped - exp.value_targets) ** 2)
        metrics = {
            "ppo/surrogate": float((surrogate * m).sum()) / normaliser,
            "ppo/clip_fraction": float((clipped.float() * m).sum()) / normaliser,
            "ppo/value_loss": float((err.detach() * m).sum()) / normaliser,
        }
        return w * m, {"value": (self.cfg.value_coef, err)}, metrics
