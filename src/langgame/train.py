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
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from langgame.checkpoint import load_checkpoint, save_checkpoint
from langgame.config import TrainConfig
from langgame.data.episodes import read_episodes
from langgame.game import Rendered
from langgame.learner import Learner
from langgame.metrics import MetricsLog
from langgame.models import Policy, load_policy
from langgame.objective import WEIGHTINGS, bc_loss_fn, collate, player_nll, token_logprobs
from langgame.rundir import finish, prepare_run_dir
from langgame.runtime import configure_cpu


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
            logp = token_logprobs(policy.model, batch.ids, batch.attention, where=batch.owner > 0)
        for player, (nll, n) in player_nll(logp, batch.owner).items():
            sums[player][0] += nll
            sums[player][1] += n
    return {f"eval/nll_p{p}": (s / n if n else float("nan")) for p, (s, n) in sums.items()}


def _render_all(policy: Policy, path: Path, viewer: int, limit: int | None = None) -> tuple[list[Rendered], int]:
    episodes = read_episodes(path, limit)
    for e in episodes:
        e.check_payoff()
    return [policy.render(e, viewer) for e in episodes], len(episodes)


def train(cfg: TrainConfig, resume: bool = False, overwrite: bool = False, console: Console | None = None) -> Path:
    """Run behaviour cloning; returns the run directory."""
    console = console or Console(stderr=True)
    checkpoint = prepare_run_dir(cfg, resume, overwrite)
    configure_cpu(cfg.threads)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    policy_cfg = cfg.policy
    if checkpoint is not None:
        policy_cfg = cfg.policy.model_copy(update={"model": str(checkpoint / f"player{cfg.learner}" / "policy"), "lora": None})
        console.print(f"resuming from {checkpoint}")
    policy = load_policy(policy_cfg)
    learner = Learner(policy, cfg.optim, cfg.max_steps)
    if checkpoint is not None:
        learner.step = load_checkpoint(checkpoint, {f"player{cfg.learner}": learner})[0]["step"]

    train_set, _ = _render_all(policy, cfg.data.train, cfg.learner)
    eval_set = _render_all(policy, cfg.data.eval, cfg.learner, cfg.data.eval_episodes)[0] if cfg.data.eval else []
    truncated = sum(len(r) > cfg.data.max_length for r in train_set)
    if truncated:
        console.print(f"[yellow]{truncated} of {len(train_set)} training episodes exceed max_length={cfg.data.max_length} and are cut")
    weighting = WEIGHTINGS[cfg.stage]
    micro = cfg.micro_batch_size or cfg.batch_size
    pad = policy.tokenizer.pad_token_id
    log = MetricsLog(cfg.run_dir, resume_step=learner.step if checkpoint is not None else None)
    summary = {"stage": cfg.stage, "learner": cfg.learner, "train_episodes": len(train_set), "truncated_episodes": truncated}

    def run_eval() -> dict[str, float]:
        if not eval_set:
            return {}
        values = evaluate(policy, eval_set, micro, cfg.data.max_length)
        log.log(learner.step, values)
        console.print(f"step {learner.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
        return values

    def checkpoint_now() -> None:
        save_checkpoint(cfg.run_dir / "checkpoints", learner.step, {f"player{cfg.learner}": learner}, {}, cfg.keep_checkpoints)

    if checkpoint is None:
        run_eval()
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[speed]} tok/s"), TimeRemainingColumn()]
    try:
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task(f"{cfg.stage} p{cfg.learner}", total=cfg.max_steps, completed=learner.step, speed="-")
            while learner.step < cfg.max_steps:
                start = time.perf_counter()
                idx = batch_indices(learner.step, cfg.batch_size, len(train_set), cfg.seed)
                idx.sort(key=lambda i: len(train_set[i]))  # group similar lengths: less padding, same gradient
                chunks = [collate([train_set[i] for i in idx[j : j + micro]], pad, cfg.data.max_length) for j in range(0, len(idx), micro)]
                weigh = lambda b: weighting(b.owner, cfg.learner)  # noqa: E731
                normaliser = float(sum(weigh(c)[1].sum() for c in chunks))
                values = learner.update(chunks, bc_loss_fn(policy.model, policy.autocast, weigh, normaliser))
                values["train/weighted_tokens"] = normaliser
                values["train/tokens_per_s"] = values["train/tokens"] / (time.perf_counter() - start)
                log.log(learner.step, values)
                bar.update(task, completed=learner.step, speed=f"{values['train/tokens_per_s']:.0f}")
                if cfg.eval_every and learner.step % cfg.eval_every == 0 and learner.step < cfg.max_steps:
                    run_eval()
                if cfg.save_every and learner.step % cfg.save_every == 0 and learner.step < cfg.max_steps:
                    checkpoint_now()
    except KeyboardInterrupt:
        checkpoint_now()
        log.close()
        console.print(f"interrupted: checkpoint saved at step {learner.step}; continue with --resume")
        raise
    run_eval()
    checkpoint_now()
    log.close()
    finish(cfg.run_dir, {f"player{cfg.learner}": policy}, summary)
    return cfg.run_dir
