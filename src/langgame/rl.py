"""`langgame train` with stage: rl — one or both players learn by policy gradient (sections 4.4-4.9).

One step: the schedule names the players that learn now (schedule.py); for them, draw initial
contexts from the game's train split, play `group_size` episodes from each against the other
player's current policy (or, for population, a past checkpoint of it), let the game judge them,
turn each learner's view of them into Experience, and hand it to the seat's Learner: `score`
(reference, old log-probs, values: whatever the rule and the KL term need, without gradients),
then `update` (the rule's advantages and `algo.epochs` optimizer steps on the one objective).
Who plays with which model is built in seats.py; where the seats live (this process or Ray
actors: `engine`) is engine.py's business: this driver calls the same act / score / update /
load_weights on both, and holds the game, its judges and the scripted players itself.
"""

from __future__ import annotations

import copy
import hashlib
import random
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from langgame.algos import RULES
from langgame.algos.base import Experience
from langgame.checkpoint import load_checkpoint, save_checkpoint
from langgame.config import RLConfig
from langgame.data.episodes import write_episodes
from langgame.engine import Engine
from langgame.game import Episode, Game, learner_rewards
from langgame.games import make_game
from langgame.loop import drive
from langgame.models import Policy, load_policy
from langgame.objective import collate
from langgame.rollout import Actor, play
from langgame.schedule import learning_now, opponent_snapshot
from langgame.seats import frozen


def experience(game: Game, episodes: list[Episode], policy: Policy, role: int, groups: list[int],
               temperature: float = 1.0) -> Experience | None:
    """The learner's view of judged episodes: its observation of each, rendered with owners.

    The mask holds only actions the learner sampled: turns of its role drawn by chance or scripted
    (no recorded tokens) are part of the environment and get no weight; episodes in which the
    learner sampled nothing are left out (None if that is all of them). temperature: the learner's
    sampling temperature (its policy is softmax(logits / T)). A game may split the learner's view of
    an episode into rows (Game.views, e.g. independent attempts at one task): each row is credited
    with the rewards up to the learner's next row, and its return is their sum.
    """
    rows = [(i, v) for i, e in enumerate(episodes) if any(t.player == role and t.tokens is not None for t in e.turns)
            for v in game.views(e, role)]
    if not rows:
        return None
    rendered = [policy.encode(v) for _, v in rows]
    batch = collate(rendered, policy.pad_id)
    rewards = np.zeros(batch.owner.shape)
    mask = batch.owner == role
    behaviour = torch.zeros(mask.shape)
    returns = []
    for j, ((i, _), r) in enumerate(zip(rows, rendered)):
        e = episodes[i]
        own = [k for k, t in enumerate(e.turns) if t.player == role and t.tokens is not None]
        shown = set(r.turn[r.owner == role].tolist())
        here = [k for k in own if k in shown]
        until = next((k for k in own if k > here[-1]), None) if here else None  # the learner's next row starts there
        rewards[j, : len(r) - 1] = learner_rewards(e, r, role, until)[1:]  # token t is action t - 1
        mask[j] &= torch.isin(batch.turn[j], torch.tensor(here, dtype=torch.long))
        behaviour[j][mask[j]] = torch.tensor([lp for k in here for lp in e.turns[k].logprobs])  # the engine's, in the mask's order
        shaping = e.meta.get("shaping", {}).get(str(role), 0.0)
        returns.append(e.returns()[role - 1] + shaping if len(here) == len(own) else float(rewards[j].sum()))
    episodes = [episodes[i] for i, _ in rows]
    return Experience(
        batch=batch,
        mask=mask.float(),
        rewards=torch.as_tensor(rewards, dtype=torch.float32),
        returns=torch.tensor(returns, dtype=torch.float32),
        groups=torch.tensor([groups[i] for i, _ in rows]),
        games=torch.tensor([_stable_seed((e.game,)) for e in episodes]),
        roles=torch.full((len(rows),), role),
        temperature=torch.full((len(rows),), float(temperature)),
        behaviour_logp=behaviour,
    )


def play_scenarios(game: Game, players: dict[int, Actor], split: str, n_scenarios: int, group_size: int,
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


def _stable_seed(key: tuple) -> int:
    return int(hashlib.sha256(repr(key).encode()).hexdigest()[:15], 16)


class RLRun:
    """The state of one RL run: the game, the seats (policies, learners, references: in the engine), the step.

    policies[p] / initial[p] are the players' policies as the driver sees them (engine local: the
    policies; ray: views holding the tokenizer and weight version of a model in a Ray actor).
    address: engine ray joins this Ray cluster instead of starting one (`langgame train --address`).
    """

    def __init__(self, cfg: RLConfig, checkpoint: Path | None, address: str | None = None):
        self.cfg = cfg
        self.game = make_game(cfg.game)
        self.player_cfg = {1: cfg.player1, 2: cfg.player2}
        self.temperature = {p: c.sampling.temperature for p, c in self.player_cfg.items()}
        self.engine = Engine(cfg, checkpoint, address)
        self.policies, self.initial, self.seat, self.backend = self.engine.policies, self.engine.initial, self.engine.seat, self.engine.backend
        self.rules = {seat: RULES[cfg.algo_of(p).name](cfg.algo_of(p)) for p, seat in self.seat.items()}  # each seat's learning rule
        state = load_checkpoint(checkpoint, {})[0] if checkpoint is not None else {}  # state.json and the driver's RNG
        self.iteration = state.get("iteration", 0)
        if "game" in state:
            self.game.load_state_dict(state["game"])
        self.header = {"stage": "rl", "learners": cfg.learners, "game": cfg.game.name}

    @property
    def learners(self) -> dict:
        """The Learner of each seat (engine local; on engine ray they live in the Ray actors)."""
        return self.engine.learners

    # --- playing --------------------------------------------------------------------------------

    def play(self, profile: dict[int, Policy | None], split: str, n_scenarios: int, group_size: int, seed: tuple) -> tuple[list[Episode], list[int]]:
        actors = {p: self.engine.actor(profile[p], p) for p in (1, 2)}
        return play_scenarios(self.game, actors, split, n_scenarios, group_size, seed)

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
                exp = experience(self.game, episodes, self.policies[p], p, groups, self.temperature[p])
                if exp is not None:
                    experiences.setdefault(self.seat[p], []).append(exp)
        update_s, update_tokens = 0.0, 0.0
        for seat, parts in experiences.items():
            scored, exp = self.engine.score(seat, Experience.concat(parts), self.rules[seat])
            t0 = time.perf_counter()
            out, version = self.engine.update(seat, exp, self.rules[seat])
            update_s += time.perf_counter() - t0
            self.engine.load_weights(seat, version)
            values.update({f"{k}_{seat}": v for k, v in {**scored, **out}.items()})
            update_tokens += values[f"train/tokens_{seat}"]
        self.iteration += 1
        if cfg.save_train_episodes_every and self.iteration % cfg.save_train_episodes_every == 0:
            write_episodes(cfg.run_dir / "episodes" / f"train_step{self.iteration:07d}.parquet", played)
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

        When both players learn (and cfg.eval_initial), each learner's initial policy is also evaluated
        against the other's current policy (eval_initial_p<i>/...: e.g. the attack success rate against
        the initial defender); before the first update these profiles are the current one, so its
        numbers are reused. The
        game's exact policy metrics (e.g. exploitability) are of the current profile only (eval/...).
        """
        cfg = self.cfg
        profiles = {"eval": {1: self.policies[1], 2: self.policies[2]}}
        both = len(cfg.learners) == 2 and cfg.eval_initial
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
        if cfg.engine == "local":  # exact measures of the current profile need the models (engine ray: in the seats' actors)
            out.update({f"eval/{k}": v for k, v in self.game.policy_metrics(profiles["eval"]).items()})
        return out, current

    def checkpoint(self, root: Path, keep: int, state: dict) -> None:
        save_checkpoint(root, self.iteration, {}, {**state, "game": self.game.state_dict()}, keep, write=self.engine.save)

    def final_policies(self) -> dict[str, Policy]:
        """Each seat's policy (engine ray: a view whose model the seat's worker saves)."""
        return {seat: self.policies[p] for p, seat in self.seat.items()}

    def progress(self, values: dict[str, float]) -> str:
        return f"R1 {values['reward/p1']:.2f} R2 {values['reward/p2']:.2f} | {values['rollout/tokens_per_s']:.0f} gen tok/s"

    def close(self) -> None:
        self.engine.close()


def train_rl(cfg: RLConfig, resume: bool = False, overwrite: bool = False, console: Console | None = None) -> Path:
    """Run RL; returns the run directory."""
    return drive(RLRun, cfg, resume, overwrite, console)
