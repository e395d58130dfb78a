"""A learning seat: policy pi_theta (plus heads such as a value head), its reference pi_ref, AdamW
and its LR schedule.

`score(exp, rule)` and `update(exp, rule)` are, with the Actor's `act` and `load_weights`
(rollout.py), the only calls that cross a process boundary when seats run as Ray actors
(engine.py): experience goes in, metrics and a weight version come out.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import torch

from langgame.algos.base import Experience, Rule
from langgame.config import AlgoConfig, OptimConfig
from langgame.models import Policy
from langgame.objective import kl_estimate, loss

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


def micro_batches(exp: Experience, size: int) -> list[Experience]:
    """Rows of exp in micro-batches of `size`, grouped by length (less padding, same gradient)."""
    order = sorted(range(len(exp.mask)), key=lambda i: int(exp.batch.attention[i].sum()))
    return [exp.rows(order[i : i + size]) for i in range(0, len(order), size)]


def _chunks(n: int, size: int) -> list[list[int]]:
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


class Learner:
    def __init__(self, policy: Policy, cfg: OptimConfig, max_steps: int, heads: dict[str, torch.nn.Module] | None = None,
                 params: list[torch.nn.Parameter] | None = None, algo: AlgoConfig | None = None,
                 reference: Policy | None = None, micro_batch_size: int = 8):
        """params: the policy's parameters to train (default: all that require gradients, e.g. one LoRA
        adapter). algo: the KL and entropy regularisers (none for behaviour cloning); reference: pi_ref
        of the KL term; micro_batch_size: episodes per forward/backward pass."""
        self.policy, self.cfg, self.max_steps = policy, cfg, max_steps
        self.heads = heads or {}
        self.algo, self.reference, self.micro_batch_size = algo or AlgoConfig(), reference, micro_batch_size
        policy_params = params if params is not None else [p for p in policy.model.parameters() if p.requires_grad]
        self.params = policy_params + [p for m in self.heads.values() for p in m.parameters()]
        self.optimizer = torch.optim.AdamW(
            self.params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay
        )
        self.step = 0

    @property
    def device(self) -> torch.device:
        return next(self.policy.model.parameters()).device

    @torch.no_grad()
    def score(self, exp: Experience, rule: Rule) -> dict[str, float]:
        """Fill reference / old log-probs / values without gradients; with the KL in the reward,
        subtract it from exp.rewards. Where the rollout engine recorded behaviour log-probs, report
        their gap to the learner's own (rollout/logp_gap: mean |log pi_engine - log pi_learner|)."""
        algo, policy = self.algo, self.policy
        want_old = rule.needs_old_logp or (algo.kl_coef > 0 and algo.kl_in == "reward") or algo.tis_cap is not None
        ref, old, values = (torch.zeros_like(exp.mask) for _ in range(3))
        policy.model.eval()
        for idx in _chunks(len(exp.mask), self.micro_batch_size):
            mb = exp.rows(idx).to(self.device)
            b, where, cols = mb.batch, mb.mask > 0, slice(0, mb.batch.owner.shape[1])
            t = 1.0 if mb.temperature is None else mb.temperature
            if want_old or rule.needs_values:
                with policy.autocast(), policy.activated():
                    fwd = policy.forward(b, where, hidden=rule.needs_values, temperature=t)
                old[idx, cols] = fwd.logp.cpu()
                if rule.needs_values:
                    values[idx, cols] = (self.heads["value"](fwd.hidden) * mb.mask).cpu()
            if algo.kl_coef > 0:
                with self.reference.autocast(), self.reference.activated():
                    ref[idx, cols] = self.reference.forward(b, where, temperature=t).logp.cpu()
        exp.old_logp = old if want_old else None
        exp.values = values if rule.needs_values else None
        metrics = {}
        on = exp.mask.sum().clamp(min=1)
        if exp.behaviour_logp is not None and want_old:
            metrics["rollout/logp_gap"] = float(((exp.behaviour_logp - old).abs() * exp.mask).sum() / on)
        if algo.kl_coef > 0:
            exp.ref_logp = ref
            if algo.kl_in == "reward":  # with the KL in the loss, the training forward reports it
                kl = kl_estimate(old, ref, algo.kl_estimator) * exp.mask
                metrics["train/kl"] = float(kl.sum() / on)
                exp.rewards = exp.rewards - algo.kl_coef * kl
        return metrics

    def update(self, exp: Experience | list[Experience], rule: Rule) -> tuple[dict[str, float], int]:
        """The rule's advantages, then `algo.epochs` optimizer steps on the one objective over
        micro-batches of exp (or over the given micro-batches, e.g. collated to a data set's
        max_length). Returns the metrics and the policy's new version."""
        parts = exp if isinstance(exp, list) else [exp]
        for part in parts:
            rule.advantages(part)
            if self.algo.tis_cap is not None and part.behaviour_logp is not None:
                # truncated importance sampling: the engine sampled from pi_engine, the learner trains pi
                ratio = torch.exp(part.old_logp - part.behaviour_logp).clamp(max=self.algo.tis_cap)
                part.advantages = part.advantages * ratio
        chunks = exp if isinstance(exp, list) else micro_batches(exp, self.micro_batch_size)
        normaliser = max(float(sum(float(part.mask.sum()) for part in parts)), 1.0)
        metrics: dict[str, float] = {}
        for _ in range(self.algo.epochs):
            metrics = self.optimize(chunks, lambda mb: self._loss(mb.to(self.device), rule, normaliser))
        return metrics, self.policy.version

    def _loss(self, mb: Experience, rule: Rule, normaliser: float) -> tuple[torch.Tensor, dict[str, float]]:
        algo, b = self.algo, mb.batch
        guide = self.guide_coef()
        with self.policy.autocast(), self.policy.activated():
            fwd = self.policy.forward(b, mb.mask > 0, entropy=algo.entropy_coef > 0, hidden=rule.needs_values,
                                      temperature=1.0 if mb.temperature is None else mb.temperature, guide=guide > 0)
        w, terms, metrics = rule.weights(fwd, mb, self.heads, normaliser)
        if algo.kl_coef > 0 and algo.kl_in == "loss":
            kl = kl_estimate(fwd.logp, mb.ref_logp, algo.kl_estimator)
            terms["kl"] = (algo.kl_coef, kl if mb.kl_support is None else kl * mb.kl_support)
        if algo.entropy_coef > 0:
            terms["entropy"] = (-algo.entropy_coef, fwd.entropy)
        if fwd.guide is not None:
            terms["guide"] = (guide, fwd.guide)
        for name in ("kl", "entropy", "guide"):
            if name in terms:
                metrics[f"train/{name}"] = float((terms[name][1].detach() * mb.mask).sum() / normaliser)
        return loss(fwd.logp, w, mb.mask, normaliser, terms), {**metrics, "train/tokens": float(b.n_tokens)}

    def guide_coef(self) -> float:
        """The weight of the teacher-suggestion term now: algo.guide_coef, annealed linearly to 0 over
        algo.guide_decay_steps optimizer steps (0: constant)."""
        algo = self.algo
        if algo.guide_decay_steps == 0:
            return algo.guide_coef
        return algo.guide_coef * max(0.0, 1 - self.step / algo.guide_decay_steps)

    def optimize(self, micro_batches: Sequence[Any], loss_fn: LossFn) -> dict[str, float]:
        """One optimizer step: backward loss_fn(mb) for every micro-batch, clip, step. Returns metrics."""
        self.policy.model.train()
        lr = self.cfg.lr * lr_factor(self.step, self.cfg, self.max_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        totals: dict[str, float] = defaultdict(float)
        for mb in micro_batches:
            loss_value, metrics = loss_fn(mb)
            loss_value.backward()
            totals["train/loss"] += loss_value.item()
            for k, v in metrics.items():
                totals[k] += v
        max_norm = self.cfg.max_grad_norm if self.cfg.max_grad_norm is not None else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.policy.model.langgame_version = self.policy.version + 1
        return {**totals, "train/grad_norm": float(grad_norm), "train/lr": lr}
