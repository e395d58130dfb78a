"""A learning player: policy pi_theta, AdamW and its LR schedule. `update` is one optimizer step
of the one objective (objective.loss) over micro-batches, with gradient accumulation."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from langgame.config import OptimConfig
from langgame.models import Policy
from langgame.objective import Batch, loss, token_logprobs

Weigh = Callable[[Batch], tuple[torch.Tensor, torch.Tensor]]


def lr_factor(step: int, cfg: OptimConfig, max_steps: int) -> float:
    """Multiplier of cfg.lr at optimizer step `step` (0-based): linear warmup, then the schedule."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, max_steps - cfg.warmup_steps))
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else 1 - progress
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * shape


class Learner:
    def __init__(self, policy: Policy, cfg: OptimConfig, max_steps: int):
        self.policy, self.cfg, self.max_steps = policy, cfg, max_steps
        self.params = [p for p in policy.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay
        )
        self.step = 0

    def update(self, micro_batches: list[Batch], weigh: Weigh) -> dict[str, float]:
        """One optimizer step on -sum(w log pi)/sum(m) over all micro-batches together.

        weigh(batch) -> (w, m), each [B, T]. Returns loss, grad_norm, lr and token counts.
        """
        model = self.policy.model
        model.train()
        lr = self.cfg.lr * lr_factor(self.step, self.cfg, self.max_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        weights = [weigh(b) for b in micro_batches]
        normaliser = float(sum(m.sum() for _, m in weights))
        total = 0.0
        for batch, (w, m) in zip(micro_batches, weights):
            with self.policy.autocast():
                logp = token_logprobs(model, batch.ids, batch.attention, where=m > 0)
            step_loss = loss(logp, w, m, normaliser=normaliser)
            step_loss.backward()
            total += step_loss.item()
        max_norm = self.cfg.max_grad_norm if self.cfg.max_grad_norm is not None else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return {
            "train/loss": total,
            "train/grad_norm": float(grad_norm),
            "train/lr": lr,
            "train/weighted_tokens": normaliser,
            "train/tokens": float(sum(b.n_tokens for b in micro_batches)),
        }
