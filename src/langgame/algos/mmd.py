"""Magnetic mirror descent (Sokota et al. 2022) for LM players of games with exact action values.

For games small enough to walk (OpenSpiel's), every information state I of a learning player has
exact action values Q(I, a) under the current profile. One MMD step in policy space is

    target(.|I) ∝ exp( (log pi_t(.|I) + eta alpha log rho(.|I) + eta Q(I, .)) / (1 + eta alpha) )

and the LM policy (constrained decoding over the legal action words, games/spiel.py) is fitted
to it by cross-entropy -- behaviour cloning onto the improved policy, i.e. the one objective of
objective.py with w_a = target(a|I) on each whole action word. Unlike a raw policy gradient, the
fit does not stall when pi_t is near-deterministic (its gradient is pi - target).

alpha = 0 is the mirror-descent (Hedge / softmax policy-gradient) step, whose last iterate
cycles around the equilibrium of games like rock-paper-scissors. alpha > 0 pulls toward the
magnet rho (uniform, or the initial LM -- the KL term of RLHF seen as game regularisation) and
makes the last iterate converge to the regularised equilibrium (a quantal response
equilibrium), which approaches a Nash equilibrium as alpha -> 0.
"""

from __future__ import annotations

import torch

from langgame.objective import loss


def mmd_target(logp: torch.Tensor, q: torch.Tensor, magnet_logp: torch.Tensor | None, alpha: float, eta: float) -> torch.Tensor:
    """The MMD step's target policy [S, A] (0 on illegal actions). logp, magnet_logp: [S, A]
    log-probs with -inf on illegal actions; q: [S, A] exact action values."""
    legal = torch.isfinite(logp)
    zero = torch.zeros_like(q)
    magnet = torch.where(legal, magnet_logp, zero) if (alpha > 0 and magnet_logp is not None) else zero
    z = (torch.where(legal, logp.detach(), zero) + eta * alpha * magnet + eta * torch.where(legal, q, zero)) / (1 + eta * alpha)
    return torch.softmax(z.masked_fill(~legal, float("-inf")), dim=-1)


def target_loss(logp: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy -sum_a target(a|I) log pi(a|I), averaged over information states: the one
    objective (objective.loss) with w = target on each legal action word. [S, A] -> scalar."""
    legal = torch.isfinite(logp)
    return loss(torch.where(legal, logp, torch.zeros_like(logp)), target, legal.float(), normaliser=len(logp))
