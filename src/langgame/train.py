"""`langgame train` for stages pretrain and sft: behaviour cloning on logged episodes.

Both stages run this one loop and differ only by the weighting of the objective (objective.py).
A run directory holds config.yaml (resolved), metrics.jsonl, tb/, checkpoints/, final/ and
summary.json; `resume=True` continues from checkpoints/latest with the same result as an
uninterrupted run.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from langgame.algos.base import Experience
from langgame.algos.bc import BehaviourCloning
from langgame.checkpoint import load_checkpoint, save_checkpoint
from langgame.config import AlgoConfig, TrainConfig
from langgame.data.episodes import read_episodes
from langgame.game import Rendered
from langgame.learner import Learner
from langgame.loop import drive
from langgame.models import Policy, load_policy
from langgame.objective import WEIGHTINGS, collate, player_nll, token_logprobs
from langgame.seats import frozen


def batch_indices(step: int, batch_size: int, n: int, seed: int) -> list[int]:
    """Episode indices of optimizer step `step`: a fresh seeded permutation every epoch."""
    out = []
    for position in range(step * batch_size, (step + 1) * batch_size):
        epoch, k = divmod(position, n)
        out.append(int(np.random.default_rng([seed, epoch]).permutation(n)[k]))
    return out


@torch.no_grad()
def evaluate(policy: Policy, rendered: list[Rendered], micro_batch: int, max_length: int) -> dict[str, float]:
    """Held-out mean NLL (nats/token) on each player's tokens."""
    policy.model.eval()
    sums = {1: [0.0, 0], 2: [0.0, 0]}
    for i in range(0, len(rendered), micro_batch):
        batch = collate(rendered[i : i + micro_batch], policy.tokenizer.pad_token_id, max_length)
        with policy.autocast():
            logp = token_logprobs(policy.model, batch.ids.to(policy.device), batch.attention.to(policy.device),
                                  where=(batch.owner > 0).to(policy.device)).cpu()
        for player, (nll, n) in player_nll(logp, batch.owner).items():
            sums[player][0] += nll
            sums[player][1] += n
    return {f"eval/nll_p{p}": (s / n if n else float("nan")) for p, (s, n) in sums.items()}


def _render_all(policy: Policy, path: Path, viewer: int, limit: int | None = None) -> tuple[list[Rendered], list[torch.Tensor]]:
    """The episodes of a Parquet file as the viewer sees them, and each one's rewards of the viewer per turn."""
    episodes = read_episodes(path, limit)
    for e in episodes:
        e.check_payoff()
    return [policy.render(e, viewer) for e in episodes], [torch.tensor([t.rewards[viewer - 1] for t in e.turns]) for e in episodes]


def turn_rewards(turn: torch.Tensor, rewards: list[torch.Tensor]) -> torch.Tensor:
    """[B, T] the reward of the turn each action acts in (0 on formatting, turn -1), from each row's per-turn rewards."""
    out = torch.zeros(turn.shape)
    for i, r in enumerate(rewards):
        inside = turn[i] >= 0
        out[i, inside] = r[turn[i, inside]].float()
    return out


class BCRun:
    """pretrain / sft: each step clones `batch_size` logged episodes with the stage's weighting."""

    def __init__(self, cfg: TrainConfig, checkpoint: Path | None):
        self.cfg, self.seat = cfg, f"player{cfg.learner}"
        spec = cfg.policy if checkpoint is None else cfg.policy.model_copy(update={"model": str(checkpoint / self.seat / "policy"), "lora": None})
        policy = load_policy(spec)
        reference = frozen(load_policy(cfg.policy)) if cfg.kl_coef > 0 else None  # pi_initial, also when resuming
        self.learner = Learner(policy, cfg.optim, cfg.max_steps, algo=AlgoConfig(kl_coef=cfg.kl_coef), reference=reference,
                               micro_batch_size=cfg.micro_batch_size or cfg.batch_size)
        self.iteration = 0
        if checkpoint is not None:
            self.iteration = self.learner.step = load_checkpoint(checkpoint, {self.seat: self.learner})[0]["step"]
        self.rule = BehaviourCloning()
        self.train_set, self.train_rewards = _render_all(policy, cfg.data.train, cfg.learner)
        self.eval_set = _render_all(policy, cfg.data.eval, cfg.learner, cfg.data.eval_episodes)[0] if cfg.data.eval else []
        truncated = sum(len(r) > cfg.data.max_length for r in self.train_set)
        if truncated:
            Console(stderr=True).print(f"[yellow]{truncated} of {len(self.train_set)} training episodes exceed max_length={cfg.data.max_length} and are cut")
        self.header = {"stage": cfg.stage, "learner": cfg.learner, "train_episodes": len(self.train_set), "truncated_episodes": truncated}

    def step(self) -> dict[str, float]:
        cfg, start = self.cfg, time.perf_counter()
        idx = batch_indices(self.iteration, cfg.batch_size, len(self.train_set), cfg.seed)
        idx.sort(key=lambda i: len(self.train_set[i]))  # group similar lengths: less padding, same gradient
        micro, pad = self.learner.micro_batch_size, self.learner.policy.tokenizer.pad_token_id
        chunks = []
        for j in range(0, len(idx), micro):
            batch = collate([self.train_set[i] for i in idx[j : j + micro]], pad, cfg.data.max_length)
            w, m = WEIGHTINGS[cfg.stage](batch.owner, cfg.learner)
            if cfg.reward_weighted:
                w = w * turn_rewards(batch.turn, [self.train_rewards[i] for i in idx[j : j + micro]])
            chunks.append(Experience(batch, mask=m, advantages=w, kl_support=(w > 0).float() if cfg.kl_coef > 0 else None))
        if cfg.kl_coef > 0:
            for chunk in chunks:  # pi_initial's log-probs for the KL term
                self.learner.score(chunk, self.rule)
        values, _ = self.learner.update(chunks, self.rule)
        self.iteration += 1
        values["train/weighted_tokens"] = float(sum(float(c.mask.sum()) for c in chunks))
        values["train/tokens_per_s"] = values["train/tokens"] / (time.perf_counter() - start)
        return values

    def evaluate(self) -> tuple[dict[str, float], list]:
        if not self.eval_set:
            return {}, []
        return evaluate(self.learner.policy, self.eval_set, self.learner.micro_batch_size, self.cfg.data.max_length), []

    def checkpoint(self, root: Path, keep: int, state: dict) -> None:
        save_checkpoint(root, self.iteration, {self.seat: self.learner}, state, keep)

    def final_policies(self) -> dict[str, Policy]:
        return {self.seat: self.learner.policy}

    def progress(self, values: dict[str, float]) -> str:
        return f"{values['train/tokens_per_s']:.0f} tok/s"

    def close(self) -> None:
        pass


def train(cfg: TrainConfig, resume: bool = False, overwrite: bool = False, console: Console | None = None) -> Path:
    """Run behaviour cloning; returns the run directory."""
    return drive(BCRun, cfg, resume, overwrite, console)
