"""`langgame train` with stage: rl — one or both players learn by policy gradient (sections 4.4-4.9).

One step: the schedule names the players that learn now (schedule.py); for them, draw initial
contexts from the game's train split, play `group_size` episodes from each against the other
player's current policy (or, for population, a past checkpoint of it), let the game judge them,
turn each learner's view of them into Experience, score it once without gradients (reference,
old log-probs, values: whatever the rule and the KL term need), compute advantages, and take
`algo.epochs` optimizer steps per learning model on the one objective.

A learner is a "seat": player1, player2, or shared (one model for both roles). With sharing:
lora both seats are adapters of one frozen base model, and the base with its adapters disabled
is their reference policy.
"""

from __future__ import annotations

import copy
import hashlib
import random
import time
from pathlib import Path

import numpy as np
import peft
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from langgame.algos import RULES
from langgame.algos.base import Experience
from langgame.algos.ppo import ValueHead
from langgame.checkpoint import load_checkpoint, save_checkpoint
from langgame.config import ConfigError, LoraSettings, RLConfig
from langgame.data.episodes import write_episodes
from langgame.game import Episode, Game, learner_rewards, render
from langgame.games import make_game
from langgame.learner import Learner
from langgame.metrics import MetricsLog
from langgame.models import Policy, load_policy
from langgame.objective import collate, kl_estimate, policy_forward
from langgame.rollout import Player, play
from langgame.rundir import finish, prepare_run_dir
from langgame.runtime import configure_cpu
from langgame.schedule import learning_now, opponent_snapshot


def frozen(policy: Policy) -> Policy:
    """A frozen copy of a policy (the reference pi_ref, or a fixed opponent)."""
    model = copy.deepcopy(policy.model).eval().requires_grad_(False)
    return Policy(model, policy.tokenizer, policy.name, policy.eot_token, policy.compute_dtype)


def experience(game: Game, episodes: list[Episode], policy: Policy, role: int, groups: list[int]) -> Experience | None:
    """The learner's view of judged episodes: its observation of each, rendered with owners.

    The mask holds only actions the learner sampled: turns of its role drawn by chance or scripted
    (no recorded tokens) are part of the environment and get no weight; episodes in which the
    learner sampled nothing are left out (None if that is all of them).
    """
    keep = [i for i, e in enumerate(episodes) if any(t.player == role and t.tokens is not None for t in e.turns)]
    if not keep:
        return None
    episodes, groups = [episodes[i] for i in keep], [groups[i] for i in keep]
    rendered = [render(game.observation(e, role), policy.tokenizer, policy.eot_token) for e in episodes]
    batch = collate(rendered, policy.tokenizer.pad_token_id)
    rewards = np.zeros(batch.owner.shape)
    sampled = torch.zeros(batch.owner.shape, dtype=torch.bool)
    for i, (e, r) in enumerate(zip(episodes, rendered)):
        rewards[i, : len(r) - 1] = learner_rewards(e, r, role)[1:]  # token j is action j - 1
        turns = [k for k, t in enumerate(e.turns) if t.player == role and t.tokens is not None]
        sampled[i] = torch.isin(batch.turn[i], torch.tensor(turns, dtype=torch.long))
    shaping = [e.meta.get("shaping", {}).get(str(role), 0.0) for e in episodes]
    return Experience(
        batch=batch,
        mask=((batch.owner == role) & sampled).float(),
        rewards=torch.as_tensor(rewards, dtype=torch.float32),
        returns=torch.tensor([e.returns()[role - 1] + s for e, s in zip(episodes, shaping)], dtype=torch.float32),
        groups=torch.tensor(groups),
        roles=torch.full((len(episodes),), role),
    )


def micro_batches(exp: Experience, size: int) -> list[Experience]:
    order = sorted(range(len(exp.returns)), key=lambda i: int(exp.batch.attention[i].sum()))  # less padding
    return [exp.rows(order[i : i + size]) for i in range(0, len(order), size)]


def play_scenarios(game: Game, players: dict[int, Player], split: str, n_scenarios: int, group_size: int,
                   seed: tuple) -> tuple[list[Episode], list[int]]:
    """Draw n_scenarios initial contexts of `split` (seeded), play group_size episodes from each. Returns episodes and group ids."""
    rng = random.Random(repr(seed))
    episodes, groups = [], []
    for g in range(n_scenarios):
        root = game.initial(rng, split)
        for _ in range(group_size):
            episodes.append(copy.deepcopy(root))
            groups.append(g)
    return play(game, players, episodes, torch.Generator().manual_seed(_stable_seed(seed))), groups


def _chunks(n: int, size: int) -> list[list[int]]:
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


def _stable_seed(key: tuple) -> int:
    return int(hashlib.sha256(repr(key).encode()).hexdigest()[:15], 16)


class RLRun:
    """The state of one RL run: game, policies of both players, learners, references; the step functions."""

    def __init__(self, cfg: RLConfig, checkpoint: Path | None):
        self.cfg = cfg
        self.game = make_game(cfg.game)
        self.rule = RULES[cfg.algo.name](cfg.algo)
        self.player_cfg = {1: cfg.player1, 2: cfg.player2}
        self.temperature = {p: c.sampling.temperature for p, c in self.player_cfg.items()}
        self.seat = {p: ("shared" if cfg.sharing == "shared" else f"player{p}") for p in cfg.learners}
        self.policies: dict[int, Policy | None] = {}
        self.initial: dict[int, Policy | None] = {}  # each learner's initial policy (frozen copy, or LoRA base view); None if unused
        if cfg.sharing == "lora":
            self._lora_learners(checkpoint)
        else:
            self._full_learners(checkpoint)
        for p in (1, 2):
            if p not in cfg.learners:  # a fixed opponent: scripted, or a frozen policy (the learner's initial one if equal)
                spec = self.player_cfg[p].policy
                same = [q for q in cfg.learners if self.initial.get(q) is not None and self.player_cfg[q].policy.model_copy(update={"lora": None}) == spec]
                self.policies[p] = None if spec is None else (self.initial[same[0]] if same else frozen(load_policy(spec)))
        heads = lambda: {"value": ValueHead(self.policies[cfg.learners[0]].model.config.hidden_size)} if self.rule.needs_values else {}  # noqa: E731
        self.learners: dict[str, Learner] = {}
        for p, seat in self.seat.items():
            if seat not in self.learners:
                policy = self.policies[p]
                params = _adapter_params(policy) if cfg.sharing == "lora" else None
                self.learners[seat] = Learner(policy, cfg.optim, cfg.max_steps * cfg.algo.epochs, heads(), params)
        self.iteration = 0
        if checkpoint is not None:
            state, _ = load_checkpoint(checkpoint, self.learners)
            self.iteration = state["iteration"]
            self.game.load_state_dict(state.get("game", {}))
            for learner in self.learners.values():
                learner.step = self.iteration * cfg.algo.epochs

    def _needs_initial(self, p: int) -> bool:
        other = 3 - p
        return (self.cfg.algo.kl_coef > 0 or other in self.cfg.learners
                or (other not in self.cfg.learners and self.player_cfg[other].policy == self.player_cfg[p].policy.model_copy(update={"lora": None})))

    def _full_learners(self, checkpoint: Path | None) -> None:
        for p in self.cfg.learners:
            seat, spec = self.seat[p], self.player_cfg[p].policy
            shared = [q for q in self.policies if self.seat.get(q) == seat]
            if shared:  # sharing: shared, the second role of the one model
                self.policies[p], self.initial[p] = self.policies[shared[0]], self.initial[shared[0]]
                continue
            if checkpoint is not None:
                spec = spec.model_copy(update={"model": str(checkpoint / seat / "policy"), "lora": None})
            self.policies[p] = load_policy(spec)
            wanted = self._needs_initial(p) or (self.cfg.sharing == "shared" and self._needs_initial(3 - p))
            policy = self.policies[p]
            if self.player_cfg[p].policy.lora is not None:  # a LoRA learner's reference: its base, adapter disabled
                self.initial[p] = Policy(policy.model, policy.tokenizer, policy.name, policy.eot_token, policy.compute_dtype, base_only=True)
            elif wanted:
                self.initial[p] = frozen(load_policy(self.player_cfg[p].policy) if checkpoint else policy)
            else:
                self.initial[p] = None

    def _lora_learners(self, checkpoint: Path | None) -> None:
        """sharing: lora — one frozen base model, one adapter per player, swapped per turn."""
        base_spec = self.player_cfg[1].policy.model_copy(update={"lora": None})
        base = load_policy(base_spec)
        model = base.model
        for p in (1, 2):
            name = f"player{p}"
            if checkpoint is not None:
                directory = checkpoint / name / "policy"
                if isinstance(model, peft.PeftModel):
                    model.load_adapter(directory, adapter_name=name, is_trainable=True)
                else:
                    model = peft.PeftModel.from_pretrained(model, directory, adapter_name=name, is_trainable=True)
                continue
            lora = self.player_cfg[p].policy.lora or LoraSettings()
            config = peft.LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                     target_modules=lora.target_modules, task_type="CAUSAL_LM")
            try:
                model = peft.get_peft_model(model, config, adapter_name=name) if not isinstance(model, peft.PeftModel) else model
                if name not in model.peft_config:
                    model.add_adapter(name, config)
            except ValueError as e:
                raise ConfigError(f"player{p}.policy: sharing: lora cannot wrap {base_spec.model!r}: {str(e).splitlines()[0]}") from None
            model.peft_config[name].base_model_name_or_path = base_spec.model
        for p in (1, 2):
            self.policies[p] = Policy(model, base.tokenizer, base.name, base.eot_token, base.compute_dtype, adapter=f"player{p}")
            self.initial[p] = Policy(model, base.tokenizer, base.name, base.eot_token, base.compute_dtype, base_only=True)

    # --- playing --------------------------------------------------------------------------------

    def play(self, profile: dict[int, Policy | None], split: str, n_scenarios: int, group_size: int, seed: tuple) -> tuple[list[Episode], list[int]]:
        players = {p: Player(profile[p], self.player_cfg[p].sampling) for p in (1, 2)}
        return play_scenarios(self.game, players, split, n_scenarios, group_size, seed)

    def opponent(self, player: int) -> Policy | None:
        """population: the other player drawn from its past checkpoints and initial policy."""
        other = 3 - player
        if other not in self.cfg.learners:
            return self.policies[other]
        directory = opponent_snapshot(self.cfg.run_dir, self.seat[other], self.cfg.seed, self.iteration, player)
        if directory is None:
            return self.initial[other] or self.policies[other]
        spec = self.player_cfg[other].policy.model_copy(update={"model": str(directory), "lora": None})
        return frozen(load_policy(spec))

    # --- learning -------------------------------------------------------------------------------

    @torch.no_grad()
    def score(self, seat: str, exp: Experience) -> dict[str, float]:
        """Fill reference / old log-probs / values; shape rewards with the KL when it is in the reward."""
        algo, learner = self.cfg.algo, self.learners[seat]
        policy, model = learner.policy, learner.policy.model
        temperature = self._temperatures(exp)
        want_old = self.rule.needs_old_logp or (algo.kl_coef > 0 and algo.kl_in == "reward")
        ref, old, values = (torch.zeros_like(exp.mask) for _ in range(3))
        model.eval()
        reference = self.initial[int(exp.roles[0])]
        for idx in _chunks(len(exp.returns), self.cfg.micro_batch_size):
            mb = exp.rows(idx)
            b, where, cols, t = mb.batch, mb.mask > 0, slice(0, mb.batch.owner.shape[1]), temperature[idx]
            if want_old or self.rule.needs_values:
                with policy.autocast(), policy.activated():
                    fwd = policy_forward(model, b.ids, b.attention, where, hidden=self.rule.needs_values, temperature=t)
                old[idx, cols] = fwd.logp
                if self.rule.needs_values:
                    values[idx, cols] = learner.heads["value"](fwd.hidden) * mb.mask
            if algo.kl_coef > 0:
                with reference.autocast(), reference.activated():
                    ref[idx, cols] = policy_forward(reference.model, b.ids, b.attention, where, temperature=t).logp
        exp.old_logp = old if want_old else None
        exp.values = values if self.rule.needs_values else None
        metrics = {}
        if algo.kl_coef > 0:
            exp.ref_logp = ref
            if algo.kl_in == "reward":  # with the KL in the loss, the training forward reports it
                kl = kl_estimate(old, ref, algo.kl_estimator) * exp.mask
                metrics[f"train/kl_{seat}"] = float(kl.sum() / exp.mask.sum().clamp(min=1))
                exp.rewards = exp.rewards - algo.kl_coef * kl
        return metrics

    def _temperatures(self, exp: Experience) -> torch.Tensor:
        return torch.tensor([self.temperature[int(r)] for r in exp.roles])

    def loss_fn(self, seat: str, normaliser: float):
        algo, learner = self.cfg.algo, self.learners[seat]

        def fn(mb: Experience):
            b = mb.batch
            with learner.policy.autocast(), learner.policy.activated():
                fwd = policy_forward(learner.policy.model, b.ids, b.attention, mb.mask > 0, entropy=algo.entropy_coef > 0,
                                     hidden=self.rule.needs_values, temperature=self._temperatures(mb))
            loss, metrics = self.rule.loss(fwd, mb, learner.heads, normaliser)
            metrics = {f"{k}_{seat}": v for k, v in metrics.items()}
            if algo.kl_coef > 0 and algo.kl_in == "loss":
                kl = (kl_estimate(fwd.logp, mb.ref_logp, algo.kl_estimator) * mb.mask).sum() / normaliser
                loss = loss + algo.kl_coef * kl
                metrics[f"train/kl_{seat}"] = kl.item()
            if algo.entropy_coef > 0:
                entropy = (fwd.entropy * mb.mask).sum() / normaliser
                loss = loss - algo.entropy_coef * entropy
                metrics[f"train/entropy_{seat}"] = entropy.item()
            return loss, {**metrics, f"train/tokens_{seat}": float(b.n_tokens)}

        return fn

    def step(self) -> dict[str, float]:
        cfg, start = self.cfg, time.perf_counter()
        learning = learning_now(cfg.schedule, cfg.learners, self.iteration)
        if cfg.schedule.kind == "population":
            batches = [([p], {p: self.policies[p], 3 - p: self.opponent(p)}) for p in learning]
        else:
            batches = [(learning, {1: self.policies[1], 2: self.policies[2]})]
        values: dict[str, float] = {}
        experiences: dict[str, list[Experience]] = {}
        new_tokens, rollout_s, returns, truncated, played = 0, 0.0, [], [], []
        for who, profile in batches:
            t0 = time.perf_counter()
            episodes, groups = self.play(profile, "train", cfg.scenarios_per_step, cfg.algo.group_size, (cfg.seed, "train", self.iteration, tuple(who)))
            rollout_s += time.perf_counter() - t0
            new_tokens += sum(len(t.tokens) for e in episodes for t in e.turns if t.tokens is not None)
            truncated += [t.truncated for e in episodes for t in e.turns if t.tokens is not None]
            returns += [e.returns() for e in episodes]
            played += episodes
            for p in who:
                exp = experience(self.game, episodes, self.policies[p], p, groups)
                if exp is not None:
                    experiences.setdefault(self.seat[p], []).append(exp)
        update_s, update_tokens = 0.0, 0.0
        for seat, parts in experiences.items():
            exp = Experience.concat(parts)
            values.update(self.score(seat, exp))
            self.rule.advantages(exp)
            chunks = micro_batches(exp, cfg.micro_batch_size)
            normaliser = float(exp.mask.sum().clamp(min=1))
            t0 = time.perf_counter()
            for _ in range(cfg.algo.epochs):
                out = self.learners[seat].update(chunks, self.loss_fn(seat, normaliser))
                values.update({(k if k.endswith(f"_{seat}") else f"{k}_{seat}"): v for k, v in out.items()})
            update_s += time.perf_counter() - t0
            update_tokens += values[f"train/tokens_{seat}"]
        self.iteration += 1
        returns = np.array(returns)
        values.update({
            "reward/p1": float(returns[:, 0].mean()),
            "reward/p2": float(returns[:, 1].mean()),
            "rollout/new_tokens": float(new_tokens),
            "rollout/tokens_per_s": new_tokens / rollout_s,
            "rollout/truncated_turns": float(sum(truncated)),
            "train/tokens": update_tokens,
            "train/tokens_per_s": update_tokens / max(update_s, 1e-9),
            "time/step_s": time.perf_counter() - start,
            **{f"game/{k}": v for k, v in self.game.metrics(played).items()},
        })
        return values

    @torch.no_grad()
    def evaluate(self) -> tuple[dict[str, float], list[Episode]]:
        """Game metrics and mean returns on held-out initial contexts (eval split), the same ones every
        time, and the episodes of the current profile.

        When both players learn, each learner's initial policy is also evaluated against the other's
        current policy (eval_initial_p<i>/...: e.g. the attack success rate against the initial defender);
        before the first update these profiles are the current one, so its numbers are reused.
        """
        cfg = self.cfg
        profiles = {"eval": {1: self.policies[1], 2: self.policies[2]}}
        both = len(cfg.learners) == 2
        if both and self.iteration > 0:
            for p in cfg.learners:
                profiles[f"eval_initial_p{p}"] = {p: self.initial[p] or self.policies[p], 3 - p: self.policies[3 - p]}
        out, current = {}, []
        for prefix, profile in profiles.items():
            episodes, _ = self.play(profile, "eval", cfg.eval_scenarios, 1, (cfg.seed, "eval"))
            returns = np.array([e.returns() for e in episodes])
            out.update({f"{prefix}/{k}": v for k, v in self.game.metrics(episodes).items()})
            out.update({f"{prefix}/reward_p1": float(returns[:, 0].mean()), f"{prefix}/reward_p2": float(returns[:, 1].mean())})
            current = current or episodes
        if both and self.iteration == 0:
            out.update({f"eval_initial_p{p}/{k[len('eval/'):]}": v for p in cfg.learners for k, v in list(out.items())})
        return out, current


def _adapter_params(policy: Policy) -> list[torch.nn.Parameter]:
    return [p for n, p in policy.model.named_parameters() if f".{policy.adapter}." in n]


def train_rl(cfg: RLConfig, resume: bool = False, overwrite: bool = False, console: Console | None = None) -> Path:
    """Run RL; returns the run directory."""
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
        values, episodes = run.evaluate()
        write_episodes(cfg.run_dir / "episodes" / f"eval_step{run.iteration:07d}.parquet", episodes)
        log.log(run.iteration, values)
        console.print(f"step {run.iteration}: " + ", ".join(f"{k} {v:.3f}" for k, v in values.items()))

    def checkpoint_now() -> None:
        save_checkpoint(cfg.run_dir / "checkpoints", run.iteration, run.learners,
                        {"iteration": run.iteration, "game": run.game.state_dict()}, cfg.keep_checkpoints)

    if checkpoint is None:
        run_eval()
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"), TimeRemainingColumn()]
    learners = "+".join(f"p{p}" for p in cfg.learners)
    try:
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task(f"rl {learners} {cfg.game.name}", total=cfg.max_steps, completed=run.iteration, info="")
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
    finish(cfg.run_dir, {seat: learner.policy for seat, learner in run.learners.items()},
           {"stage": "rl", "learners": cfg.learners, "game": cfg.game.name})
    return cfg.run_dir

