"""A learning player: policy pi_theta (plus optional heads such as a value head), AdamW and its LR
schedule. `update` is one optimizer step over micro-batches with gradient accumulation."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import torch

from langgame.config import OptimConfig
from langgame.models import Policy

# micro-batch -> (loss already divided by the whole step's normaliser, float metrics summed over micro-batches)
LossFn = Callable[[Any], tuple[torch.Tensor, dict[str, float]]]


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
    def __init__(self, policy: Policy, cfg: OptimConfig, max_steps: int, heads: dict[str, torch.nn.Module] | None = None,
                 params: list[torch.nn.Parameter] | None = None):
        """params: the policy's parameters to train (default: all that require gradients, e.g. one LoRA adapter)."""
        self.policy, self.cfg, self.max_steps = policy, cfg, max_steps
        self.heads = heads or {}
        policy_params = params if params is not None else [p for p in policy.model.parameters() if p.requires_grad]
        self.params = policy_params + [p for m in self.heads.values() for p in m.parameters()]
        self.optimizer = torch.optim.AdamW(
            self.params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay
        )
        self.step = 0

    def update(self, micro_batches: Sequence[Any], loss_fn: LossFn) -> dict[str, float]:
        """One optimizer step: backward loss_fn(mb) for every micro-batch, clip, step. Returns metrics."""
        self.policy.model.train()
        lr = self.cfg.lr * lr_factor(self.step, self.cfg, self.max_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        totals: dict[str, float] = defaultdict(float)
        for mb in micro_batches:
            loss, metrics = loss_fn(mb)
            loss.backward()
            totals["train/loss"] += loss.item()
            for k, v in metrics.items():
                totals[k] += v
        max_norm = self.cfg.max_grad_norm if self.cfg.max_grad_norm is not None else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.policy.model.langgame_version = self.policy.version + 1
        return {**totals, "train/grad_norm": float(grad_norm), "train/lr": lr}
