"""`langgame train` with stage: selfplay — both LM players of an OpenSpiel game learn (paper 4.7-4.9).

Each step: every LM's constrained-decoding policy at all its information states (games/spiel.py;
with gradients for the players that learn this step), exact action values from OpenSpiel's tree
walk under the current profile -- or, for fictitious play, against the opponent's average
policy -- and one optimizer step per learning model on algos/mmd.py's loss. Every `eval_every`
steps the exact exploitability (OpenSpiel) of the current policies, the last iterate, is logged,
and for fictitious play also that of the average policy.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from open_spiel.python import policy as policy_lib
from open_spiel.python.algorithms import action_value
from rich.console import Console

from langgame.algos.mmd import mmd_target, target_loss
from langgame.checkpoint import load_checkpoint, save_checkpoint
from langgame.config import SelfPlayConfig
from langgame.equilibrium import exploitability, nash_conv
from langgame.games.spiel import action_logprobs, load_game
from langgame.learner import Learner
from langgame.loop import drive
from langgame.models import Policy, load_policy
from langgame.seats import seat_of


class SelfPlay:
    def __init__(self, cfg: SelfPlayConfig, checkpoint: Path | None):
        self.cfg = cfg
        self.game = load_game(cfg.game, cfg.text)
        self.current = policy_lib.TabularPolicy(self.game.game)
        keys = {p: self.current.states_per_player[p - 1] for p in (1, 2)}
        self.rows = {p: [self.current.state_lookup[k] for k in keys[p]] for p in (1, 2)}
        self.states = {p: [self.current.states[r] for r in self.rows[p]] for p in (1, 2)}
        self.seat = {p: seat_of(p, cfg.sharing) for p in (1, 2)}
        self.learners = {}
        for seat in dict.fromkeys(self.seat.values()):
            spec = cfg.policy if checkpoint is None else cfg.policy.model_copy(update={"model": str(checkpoint / seat / "policy"), "lora": None})
            self.learners[seat] = Learner(load_policy(spec), cfg.optim, cfg.max_steps * cfg.fit_steps)
        self.magnet = {p: self._magnet(p) for p in (1, 2)} if cfg.algo == "mmd" else {1: None, 2: None}
        self.calc = action_value.TreeWalkCalculator(self.game.game)
        self.average_sum = np.zeros_like(self.current.action_probability_array)
        self.iteration = 0
        if checkpoint is not None:
            state, arrays = load_checkpoint(checkpoint, self.learners)
            self.iteration = state["iteration"]
            if "average_sum" in arrays:
                self.average_sum = arrays["average_sum"].numpy()
        self.header = {"stage": "selfplay", "game": cfg.game, "algo": cfg.algo}

    def _magnet(self, player: int) -> torch.Tensor:
        """log rho(a|I) at the player's states: uniform over legal actions, or the initial LM's policy."""
        if self.cfg.magnet == "initial":
            with torch.no_grad():
                return action_logprobs(self.game, load_policy(self.cfg.policy), self.states[player], self.cfg.micro_batch_size)
        device = self.learners[self.seat[player]].device
        legal = torch.as_tensor(self.current.legal_actions_mask[self.rows[player]], dtype=torch.bool, device=device)
        n = legal.sum(-1, keepdim=True)
        return torch.where(legal, -torch.log(n.float()), torch.full(legal.shape, float("-inf"), device=device))

    def learning(self) -> set[int]:
        """Who updates at this step: both (simultaneous), or each player for alternate_every steps in turn."""
        if self.cfg.schedule == "simultaneous":
            return {1, 2}
        return {1 + (self.iteration // self.cfg.alternate_every) % 2}

    def average(self) -> policy_lib.TabularPolicy:
        """The reach-weighted average of past policies (fictitious play's output)."""
        avg = self.current.__copy__()
        total = self.average_sum.sum(-1, keepdims=True)
        avg.action_probability_array = np.where(total > 0, self.average_sum / np.maximum(total, 1e-300), self.current.action_probability_array)
        return avg

    def score(self, learning: set[int]) -> dict[int, torch.Tensor]:
        """Each LM's log pi(a|I) at its states (with gradients for `learning`); refreshes the current table."""
        logp = {}
        for p in (1, 2):
            policy = self.learners[self.seat[p]].policy
            with nullcontext() if p in learning else torch.no_grad():
                logp[p] = action_logprobs(self.game, policy, self.states[p], self.cfg.micro_batch_size)
            probs = logp[p].detach().double().exp().cpu().numpy()
            self.current.action_probability_array[self.rows[p]] = probs / probs.sum(-1, keepdims=True)
        return logp

    def step(self) -> dict[str, float]:
        start = time.perf_counter()
        learning = self.learning()
        logp = self.score(learning)
        q, reach = self.action_values()
        if self.cfg.algo == "fp":  # accumulate the current policies, weighted by their own reach
            self.average_sum += reach[:, None] * self.current.action_probability_array
        alpha = self.cfg.alpha if self.cfg.algo == "mmd" else 0.0
        targets = {p: mmd_target(logp[p], torch.as_tensor(q[self.rows[p]], dtype=torch.float32, device=logp[p].device),
                                 self.magnet[p], alpha, self.cfg.eta)
                   for p in learning}
        values = {f"train/value_p{p}": float((self.current.action_probability_array[self.rows[p]] * q[self.rows[p]]).sum(-1).mean()) for p in (1, 2)}
        for update in range(self.cfg.fit_steps):
            if update:  # later fitting steps re-score the states with the updated models
                logp = {p: action_logprobs(self.game, self.learners[self.seat[p]].policy, self.states[p], self.cfg.micro_batch_size) for p in learning}
            losses = {}
            for p in learning:
                losses[self.seat[p]] = losses.get(self.seat[p], 0.0) + target_loss(logp[p], targets[p])
            for seat, loss in losses.items():
                values.update({f"{k}_{seat}": v for k, v in self.learners[seat].optimize([loss], lambda x: (x, {})).items()})
        self.iteration += 1
        values["time/step_s"] = time.perf_counter() - start
        return values

    def action_values(self) -> tuple[np.ndarray, np.ndarray]:
        """Exact Q(I, a) for every information state [num_states, A], and each player's own reach of it [num_states].

        Player p's values are computed against the opponent's current policy, or (fp) its average policy.
        """
        q = np.zeros_like(self.current.action_probability_array)
        reach = np.zeros(len(q))
        opponents = {1: self.current, 2: self.current}
        if self.cfg.algo == "fp" and self.average_sum.any():
            opponents = {1: self.average(), 2: self.average()}
        for p in (1, 2):
            profile = [self.current, opponents[1]] if p == 1 else [opponents[2], self.current]
            out = self.calc(profile, self.current)
            q[self.rows[p]] = np.asarray(out.action_values)[self.rows[p]]
            reach[self.rows[p]] = np.asarray(out.player_reach_probs)[self.rows[p]]
        return q, reach

    def evaluate(self) -> tuple[dict[str, float], list]:
        """Exact exploitability of the LMs' current policies (re-scored: the state after the last update)."""
        with torch.no_grad():
            self.score(set())
        values = {"eval/exploitability": exploitability(self.game, self.current), "eval/nash_conv": nash_conv(self.game, self.current)}
        if self.cfg.algo == "fp":
            values["eval/exploitability_average"] = exploitability(self.game, self.average())
        return values, []

    def checkpoint(self, root: Path, keep: int, state: dict) -> None:
        arrays = {"average_sum": torch.from_numpy(self.average_sum)} if self.cfg.algo == "fp" else None
        save_checkpoint(root, self.iteration, self.learners, state, keep, arrays)

    def final_policies(self) -> dict[str, Policy]:
        return {seat: learner.policy for seat, learner in self.learners.items()}

    def progress(self, values: dict[str, float]) -> str:
        return f"{values['time/step_s']:.2f} s/step"

    def close(self) -> None:
        pass


def train_selfplay(cfg: SelfPlayConfig, resume: bool = False, overwrite: bool = False, console: Console | None = None) -> Path:
    """Run exact self-play; returns the run directory."""
    return drive(SelfPlay, cfg, resume, overwrite, console)
