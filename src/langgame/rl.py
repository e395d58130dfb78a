"""`langgame train` with stage: rl — one player learns by policy gradient against a fixed opponent.

One step: draw initial contexts from the game's train split, play `group_size` episodes from
each (rollout.play), let the game judge them, turn the learner's view of them into Experience,
score it once without gradients (reference, old log-probs, values: whatever the rule and the
KL term need), compute advantages, and take `algo.epochs` optimizer steps on the one objective.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from langgame.algos import RULES
from langgame.algos.base import Experience
from langgame.algos.ppo import ValueHead
from langgame.checkpoint import load_checkpoint, save_checkpoint, write_atomic
from langgame.config import PlayerConfig, RLConfig
from langgame.game import Episode, Game, learner_rewards, render
from langgame.games import make_game
from langgame.learner import Learner
from langgame.metrics import MetricsLog, read_metrics
from langgame.models import Policy, load_policy, save_policy
from langgame.objective import collate, kl_estimate, policy_forward
from langgame.rollout import Player, play
from langgame.runtime import configure_cpu
from langgame.train import prepare_run_dir


def frozen(policy: Policy) -> Policy:
    """A frozen copy of a policy (the reference pi_ref, or a fixed opponent)."""
    model = copy.deepcopy(policy.model).eval().requires_grad_(False)
    return Policy(model, policy.tokenizer, policy.name, policy.eot_token, policy.compute_dtype)


def experience(game: Game, episodes: list[Episode], policy: Policy, role: int, groups: list[int]) -> Experience:
    """The learner's view of judged episodes: its observation of each, rendered with owners.

    The mask holds only actions the learner sampled: turns of its role drawn by chance or scripted
    (no recorded tokens) are part of the environment and get no weight.
    """
    rendered = [render(game.observation(e, role), policy.tokenizer, policy.eot_token) for e in episodes]
    batch = collate(rendered, policy.tokenizer.pad_token_id)
    rewards = np.zeros(batch.owner.shape)
    sampled = torch.zeros(batch.owner.shape, dtype=torch.bool)
    for i, (e, r) in enumerate(zip(episodes, rendered)):
        rewards[i, : len(r) - 1] = learner_rewards(e, r, role)[1:]  # token j is action j - 1
        turns = [k for k, t in enumerate(e.turns) if t.player == role and t.tokens is not None]
        sampled[i] = torch.isin(batch.turn[i], torch.tensor(turns, dtype=torch.long))
    return Experience(
        batch=batch,
        mask=((batch.owner == role) & sampled).float(),
        rewards=torch.as_tensor(rewards, dtype=torch.float32),
        returns=torch.tensor([e.returns()[role - 1] for e in episodes], dtype=torch.float32),
        groups=torch.tensor(groups),
        roles=torch.full((len(episodes),), role),
    )


def micro_batches(exp: Experience, size: int) -> list[Experience]:
    order = sorted(range(len(exp.returns)), key=lambda i: int(exp.batch.attention[i].sum()))  # less padding
    return [exp.rows(order[i : i + size]) for i in range(0, len(order), size)]


class RLRun:
    """The state of one RL run: game, players, learner, reference, and the step functions."""

    def __init__(self, cfg: RLConfig, checkpoint: Path | None):
        self.cfg = cfg
        self.game = make_game(cfg.game)
        self.rule = RULES[cfg.algo.name](cfg.algo)
        learner_cfg: PlayerConfig = cfg.player1 if cfg.learner == 1 else cfg.player2
        opponent_cfg: PlayerConfig = cfg.player2 if cfg.learner == 1 else cfg.player1
        policy_cfg = learner_cfg.policy
        if checkpoint is not None:
            policy_cfg = policy_cfg.model_copy(update={"model": str(checkpoint / f"player{cfg.learner}" / "policy"), "lora": None})
        self.policy = load_policy(policy_cfg)
        lora = learner_cfg.policy.lora is not None
        shares_initial = opponent_cfg.policy == learner_cfg.policy.model_copy(update={"lora": None}) and not lora
        initial = None
        if (cfg.algo.kl_coef > 0 and not lora) or shares_initial:  # a frozen copy of the initial policy
            initial = frozen(load_policy(learner_cfg.policy) if checkpoint else self.policy)
        self.reference = initial if cfg.algo.kl_coef > 0 else None  # with LoRA: the base, adapter disabled
        opponent = None
        if opponent_cfg.policy is not None:
            opponent = initial if shares_initial else frozen(load_policy(opponent_cfg.policy))
        self.temperature = learner_cfg.sampling.temperature  # the learner's policy is softmax(logits / T)
        self.players = {
            cfg.learner: Player(self.policy, learner_cfg.sampling),
            3 - cfg.learner: Player(opponent, opponent_cfg.sampling),
        }
        heads = {}
        if self.rule.needs_values:
            heads["value"] = ValueHead(self.policy.model.config.hidden_size)
        self.learner = Learner(self.policy, cfg.optim, cfg.max_steps * cfg.algo.epochs, heads)
        self.iteration = 0
        if checkpoint is not None:
            self.iteration = load_checkpoint(checkpoint, {f"player{cfg.learner}": self.learner})[0]["iteration"]
            self.learner.step = self.iteration * cfg.algo.epochs

    def play(self, split: str, n_scenarios: int, group_size: int, seed: tuple) -> tuple[list[Episode], list[int]]:
        rng = random.Random(repr(seed))
        episodes, groups = [], []
        for g in range(n_scenarios):
            root = self.game.initial(rng, split)
            for _ in range(group_size):
                episodes.append(copy.deepcopy(root))
                groups.append(g)
        generator = torch.Generator().manual_seed(int(hashlib.sha256(repr(seed).encode()).hexdigest()[:15], 16))
        return play(self.game, self.players, episodes, generator), groups

    @torch.no_grad()
    def score(self, exp: Experience) -> dict[str, float]:
        """Fill reference / old log-probs / values; shape rewards with k1 when the KL is in the reward."""
        algo, model = self.cfg.algo, self.policy.model
        want_old = self.rule.needs_old_logp or (algo.kl_coef > 0 and algo.kl_in == "reward")
        ref, old, values = (torch.zeros_like(exp.mask) for _ in range(3))
        model.eval()
        for mb_idx in _chunks(len(exp.returns), self.cfg.micro_batch_size):
            mb = exp.rows(mb_idx)
            b, where = mb.batch, mb.mask > 0
            cols = slice(0, b.owner.shape[1])
            with self.policy.autocast():
                if want_old or self.rule.needs_values:
                    fwd = policy_forward(model, b.ids, b.attention, where, hidden=self.rule.needs_values, temperature=self.temperature)
                    old[mb_idx, cols] = fwd.logp
                    if self.rule.needs_values:
                        values[mb_idx, cols] = self.learner.heads["value"](fwd.hidden) * mb.mask
                if algo.kl_coef > 0:
                    ref_model = self.reference.model if self.reference else model
                    ctx = model.disable_adapter() if self.reference is None else nullcontext()
                    with ctx:
                        ref[mb_idx, cols] = policy_forward(ref_model, b.ids, b.attention, where, temperature=self.temperature).logp
        exp.old_logp = old if want_old else None
        exp.values = values if self.rule.needs_values else None
        metrics = {}
        if algo.kl_coef > 0:
            exp.ref_logp = ref
            if algo.kl_in == "reward":  # with the KL in the loss, the training forward reports it
                kl = kl_estimate(old, ref, algo.kl_estimator) * exp.mask
                metrics["train/kl"] = float(kl.sum() / exp.mask.sum().clamp(min=1))
                exp.rewards = exp.rewards - algo.kl_coef * kl
        return metrics

    def loss_fn(self, normaliser: float):
        algo, heads = self.cfg.algo, self.learner.heads

        def fn(mb: Experience):
            b = mb.batch
            with self.policy.autocast():
                fwd = policy_forward(self.policy.model, b.ids, b.attention, mb.mask > 0, entropy=algo.entropy_coef > 0,
                                     hidden=self.rule.needs_values, temperature=self.temperature)
            loss, metrics = self.rule.loss(fwd, mb, heads, normaliser)
            if algo.kl_coef > 0 and algo.kl_in == "loss":
                kl = (kl_estimate(fwd.logp, mb.ref_logp, algo.kl_estimator) * mb.mask).sum() / normaliser
                loss = loss + algo.kl_coef * kl
                metrics["train/kl"] = kl.item()
            if algo.entropy_coef > 0:
                entropy = (fwd.entropy * mb.mask).sum() / normaliser
                loss = loss - algo.entropy_coef * entropy
                metrics["train/entropy"] = entropy.item()
            return loss, {**metrics, "train/tokens": float(b.n_tokens)}

        return fn

    def step(self) -> dict[str, float]:
        cfg = self.cfg
        start = time.perf_counter()
        episodes, groups = self.play("train", cfg.scenarios_per_step, cfg.algo.group_size, (cfg.seed, "train", self.iteration))
        rollout_s = time.perf_counter() - start
        new_tokens = sum(len(t.tokens) for e in episodes for t in e.turns if t.tokens is not None)
        exp = experience(self.game, episodes, self.policy, cfg.learner, groups)
        values = self.score(exp)
        self.rule.advantages(exp)
        chunks = micro_batches(exp, cfg.micro_batch_size)
        normaliser = float(exp.mask.sum().clamp(min=1))
        update_start = time.perf_counter()
        for _ in range(cfg.algo.epochs):
            values.update(self.learner.update(chunks, self.loss_fn(normaliser)))
        update_s = time.perf_counter() - update_start
        self.iteration += 1
        returns = np.array([e.returns() for e in episodes])
        truncated = [t.truncated for e in episodes for t in e.turns if t.tokens is not None]
        values.update({
            "reward/p1": float(returns[:, 0].mean()),
            "reward/p2": float(returns[:, 1].mean()),
            "rollout/new_tokens": float(new_tokens),
            "rollout/tokens_per_s": new_tokens / rollout_s,
            "rollout/truncated_turns": float(sum(truncated)),
            "train/tokens_per_s": values["train/tokens"] / update_s,
            "time/step_s": time.perf_counter() - start,
            **{f"game/{k}": v for k, v in self.game.metrics(episodes).items()},
        })
        return values

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Game metrics and mean returns on held-out initial contexts (eval split), same seed every time."""
        episodes, _ = self.play("eval", self.cfg.eval_scenarios, 1, (self.cfg.seed, "eval"))
        returns = np.array([e.returns() for e in episodes])
        out = {f"eval/{k}": v for k, v in self.game.metrics(episodes).items()}
        return {**out, "eval/reward_p1": float(returns[:, 0].mean()), "eval/reward_p2": float(returns[:, 1].mean())}


def _chunks(n: int, size: int) -> list[list[int]]:
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


def train_rl(cfg: RLConfig, resume: bool = False, overwrite: bool = False, console: Console | None = None) -> Path:
    """Run RL against a fixed opponent; returns the run directory."""
    console = console or Console(stderr=True)
    checkpoint = prepare_run_dir(cfg, resume, overwrite)
    configure_cpu(cfg.threads)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    run = RLRun(cfg, checkpoint)
    if checkpoint is not None:
        console.print(f"resuming from {checkpoint}")
    log = MetricsLog(cfg.run_dir, resume_step=run.iteration if checkpoint is not None else None)

    def run_eval() -> None:
        values = run.evaluate()
        log.log(run.iteration, values)
        console.print(f"step {run.iteration}: " + ", ".join(f"{k} {v:.3f}" for k, v in values.items()))

    def checkpoint_now() -> None:
        save_checkpoint(cfg.run_dir / "checkpoints", run.iteration, {f"player{cfg.learner}": run.learner},
                        {"iteration": run.iteration}, cfg.keep_checkpoints)

    if checkpoint is None:
        run_eval()
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"), TimeRemainingColumn()]
    try:
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task(f"rl p{cfg.learner} {cfg.game.name}", total=cfg.max_steps, completed=run.iteration, info="")
            while run.iteration < cfg.max_steps:
                values = run.step()
                log.log(run.iteration, values)
                info = f"R1 {values['reward/p1']:.2f} R2 {values['reward/p2']:.2f} | {values['rollout/tokens_per_s']:.0f} gen tok/s"
                bar.update(task, completed=run.iteration, info=info)
                if cfg.eval_every and run.iteration % cfg.eval_every == 0 and run.iteration < cfg.max_steps:
                    run_eval()
                if cfg.save_every and run.iteration % cfg.save_every == 0 and run.iteration < cfg.max_steps:
                    checkpoint_now()
    except KeyboardInterrupt:
        checkpoint_now()
        log.close()
        console.print(f"interrupted: checkpoint saved at step {run.iteration}; continue with --resume")
        raise
    run_eval()
    checkpoint_now()
    log.close()
    tmp = cfg.run_dir / ".final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_policy(run.policy, tmp)
    shutil.rmtree(cfg.run_dir / "final", ignore_errors=True)
    os.replace(tmp, cfg.run_dir / "final")
    evals = [r for r in read_metrics(cfg.run_dir) if any(k.startswith("eval/") for k in r)]
    summary = {"stage": "rl", "learner": cfg.learner, "game": cfg.game.name, "eval_first": evals[0], "eval_last": evals[-1]}
    write_atomic(cfg.run_dir / "summary.json", json.dumps(summary, indent=2))
    return cfg.run_dir
