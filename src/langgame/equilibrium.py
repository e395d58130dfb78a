"""Exact game-theoretic evaluation (paper eq. 6): exploitability, NashConv, cross-play and meta-Nash.

OpenSpiel style: small pure functions over a game and a tabular policy. Players: langgame's players
1 and 2 are OpenSpiel's players 0 and 1 (policies[1] acts at OpenSpiel player 0's information
states). Units are the game's payoff units (chips in poker, +-1 in matrix games).

- NashConv(pi) = sum_i [max_{pi'_i} R^i(pi'_i, pi_-i) - R^i(pi)] >= 0, and 0 exactly at a Nash
  equilibrium. Exploitability is OpenSpiel's: NashConv / 2 in a two-player constant-sum game (pure
  rock in rock-paper-scissors: NashConv 2, exploitability 1).
- induced_policy turns LMs into an OpenSpiel TabularPolicy: every information state of both players
  (walking the game tree, as TabularPolicy does), each LM's constrained-decoding policy at its own
  seat's states (games/spiel.py), computed in batched forward passes.
- For a population of checkpoints: cross_play_matrix (expected returns of every row policy against
  every column policy), meta_nash (a Nash equilibrium of that matrix game, by nashpy) and
  population_nash_conv (NashConv of a mixture when deviations are restricted to the population).
"""

from __future__ import annotations

import time
from pathlib import Path

import nashpy
import numpy as np
import pyspiel
import torch
from open_spiel.python import policy as policy_lib
from open_spiel.python.algorithms import exploitability as spiel_exploitability
from open_spiel.python.algorithms.expected_game_score import policy_value

from langgame.errors import LanggameError
from langgame.games.spiel import SpielGame, action_logprobs, load_game
from langgame.models import Policy, load_policy

CONSTANT_SUM = (pyspiel.GameType.Utility.ZERO_SUM, pyspiel.GameType.Utility.CONSTANT_SUM)


def induced_policy(game: SpielGame, policies: Policy | dict[int, Policy], micro_batch: int = 32) -> policy_lib.TabularPolicy:
    """The LMs' policy at every information state as an OpenSpiel TabularPolicy.

    policies: {1: Policy, 2: Policy}, or one Policy playing both seats. Rows of
    action_probability_array [num_info_states, num_distinct_actions] hold pi(a|I) (float64, 0 on
    illegal actions), grouped by OpenSpiel player: first player 1's states, then player 2's.
    """
    profile = {1: policies, 2: policies} if isinstance(policies, Policy) else policies
    table = policy_lib.TabularPolicy(game.game)
    for player, policy in profile.items():
        rows = [table.state_lookup[key] for key in table.states_per_player[player - 1]]
        with torch.no_grad():
            logp = action_logprobs(game, policy, [table.states[r] for r in rows], micro_batch)
        probs = logp.double().exp().cpu().numpy()
        table.action_probability_array[rows] = probs / probs.sum(-1, keepdims=True)
    return table


def _check_constant_sum(game: SpielGame) -> None:
    if game.game.get_type().utility not in CONSTANT_SUM:
        raise LanggameError(f"game {game.name!r} is not constant-sum: exploitability is undefined, use nash_conv")


def exploitability(game: SpielGame, policy: policy_lib.Policy) -> float:
    """NashConv / 2 of a two-player constant-sum game (OpenSpiel's exploitability), >= 0."""
    _check_constant_sum(game)
    return float(spiel_exploitability.exploitability(game.game, policy))


def improvements(game: SpielGame, policy: policy_lib.Policy) -> dict[int, float]:
    """{player: best-response return - on-policy return}, players numbered 1 and 2; each >= 0."""
    result = spiel_exploitability.nash_conv(game.game, policy, return_only_nash_conv=False)
    return {i + 1: float(v) for i, v in enumerate(result.player_improvements)}


def nash_conv(game: SpielGame, policy: policy_lib.Policy) -> float:
    """NashConv: the sum of both players' best-response improvements; 0 exactly at a Nash equilibrium."""
    return sum(improvements(game, policy).values())


def evaluate_policy_dir(game_name: str, model_spec: str, micro_batch: int = 32) -> dict:
    """Exploitability and NashConv of a saved policy (anything load_policy accepts) playing both seats."""
    game, policy = load_game(game_name), load_policy(model_spec)
    start = time.perf_counter()
    table = induced_policy(game, policy, micro_batch)
    seconds = time.perf_counter() - start
    gains = improvements(game, table)
    conv = gains[1] + gains[2]
    return {
        "game": game_name,
        "model": model_spec,
        "info_states": len(table.state_lookup),
        # in a constant-sum game the on-policy returns sum to the constant, so this is OpenSpiel's exploitability
        "exploitability": conv / 2 if game.game.get_type().utility in CONSTANT_SUM else None,
        "nash_conv": conv,
        "improvement_player1": gains[1],
        "improvement_player2": gains[2],
        "induced_policy_seconds": seconds,
    }


# --- populations: cross-play matrix, meta-game Nash, NashConv within the population ----------------


def cross_play_matrix(game: SpielGame, rows: list[policy_lib.Policy], cols: list[policy_lib.Policy]) -> np.ndarray:
    """Expected returns of every row policy (as player 1) against every column policy (as player 2).

    Returns float64 [len(rows), len(cols), 2]: [..., 0] is player 1's return, [..., 1] player 2's.
    """
    root = game.game.new_initial_state()
    return np.array([[policy_value(root, [row, col]) for col in cols] for row in rows], dtype=np.float64)


def meta_nash(payoff: np.ndarray, payoff2: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A Nash equilibrium (x [R], y [C]) of the matrix game with row payoffs `payoff` [R, C].

    payoff2: the column player's payoffs [R, C]; None means zero-sum (-payoff), solved exactly by
    nashpy's minimax linear program. General-sum games use nashpy's support enumeration (all support
    sizes) and return its first equilibrium; its cost grows exponentially with R and C.
    """
    a = np.asarray(payoff, dtype=np.float64)
    if payoff2 is None:
        x, y = nashpy.Game(a).linear_program()
    else:
        game = nashpy.Game(a, np.asarray(payoff2, dtype=np.float64))
        found = next(game.support_enumeration(), None)  # supports of every size
        if found is None:
            raise LanggameError(f"support enumeration found no equilibrium of the {a.shape[0]}x{a.shape[1]} meta-game")
        x, y = found
    x, y = np.clip(x, 0.0, None), np.clip(y, 0.0, None)
    return x / x.sum(), y / y.sum()


def population_nash_conv(payoff: np.ndarray, x: np.ndarray, y: np.ndarray, payoff2: np.ndarray | None = None) -> float:
    """NashConv of the mixture (x, y) when each player may deviate only to a population member.

    sum over players of (best pure response's return - mixture's return); 0 at a meta-Nash
    equilibrium; payoff2=None means zero-sum.
    """
    a = np.asarray(payoff, dtype=np.float64)
    b = -a if payoff2 is None else np.asarray(payoff2, dtype=np.float64)
    return float((a @ y).max() - x @ a @ y + (x @ b).max() - x @ b @ y)


def exploitability_curve(run_dir, cfg) -> tuple[list[dict], Path]:
    """Exact exploitability of every saved checkpoint of a selfplay run (recomputed from the saved
    policies), and a plot of the run's logged exploitability curve with those points. Returns the
    rows and the plot's path (run_dir/exploitability.png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from langgame.config import PolicyConfig
    from langgame.metrics import read_metrics

    game = load_game(cfg.game, cfg.text)
    rows = []
    for ckpt in sorted((Path(run_dir) / "checkpoints").glob("step_*")):
        seats = {1: "shared", 2: "shared"} if (ckpt / "shared").is_dir() else {1: "player1", 2: "player2"}
        spec = lambda seat: PolicyConfig(model=str(ckpt / seat / "policy"), dtype=cfg.policy.dtype, compute_dtype=cfg.policy.compute_dtype)  # noqa: E731
        loaded = {seat: load_policy(spec(seat)) for seat in set(seats.values())}
        table = induced_policy(game, {p: loaded[seat] for p, seat in seats.items()}, cfg.micro_batch_size)
        step = int(ckpt.name.split("_")[1])
        rows.append({"checkpoint": ckpt.name, "step": step, "exploitability": exploitability(game, table), "nash_conv": nash_conv(game, table)})
    logged = [r for r in read_metrics(run_dir) if "eval/exploitability" in r]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in logged], [r["eval/exploitability"] for r in logged], label="last iterate (logged)")
    if logged and "eval/exploitability_average" in logged[0]:
        ax.plot([r["step"] for r in logged], [r["eval/exploitability_average"] for r in logged], label="average policy (logged)")
    ax.scatter([r["step"] for r in rows], [r["exploitability"] for r in rows], color="black", zorder=3, label="checkpoints (recomputed)")
    ax.set(xlabel="step", ylabel="exploitability", title=f"{cfg.game}, {cfg.algo}", yscale="log")
    ax.legend()
    fig.tight_layout()
    plot = Path(run_dir) / "exploitability.png"
    fig.savefig(plot, dpi=120)
    plt.close(fig)
    return rows, plot
