"""Equilibrium diagnostics for language games between saved checkpoints (paper eq. 6, section 4.7).

cross_play     the payoff matrix M[i, j] = mean R1 of attacker checkpoint i (player 1) against defender
               checkpoint j (player 2) on the game's held-out scenarios, the meta-game's Nash
               equilibrium (nashpy, zero-sum) and the population's NashConv (how much either side
               gains by deviating to its best checkpoint in the pool); written to crossplay.json.
best_response  an approximate exploitability probe: a fresh learner trained for N steps against the
               frozen final policy of the other player; its gain in mean return is a lower bound on
               how exploitable that final policy is.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from langgame.checkpoint import write_atomic
from langgame.config import PolicyConfig, RLConfig, validate
from langgame.equilibrium import meta_nash, population_nash_conv
from langgame.errors import LanggameError
from langgame.games import make_game
from langgame.models import load_policy
from langgame.rl import play_scenarios, train_rl
from langgame.rollout import Actor


def run_config(run_dir: Path) -> RLConfig:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise LanggameError(f"{path}: not a run directory (no config.yaml)")
    return validate(RLConfig, yaml.safe_load(path.read_text()), str(path))


def _seat(run_dir: Path, player: int) -> str:
    return "shared" if any((Path(run_dir) / "checkpoints").glob("step_*/shared")) else f"player{player}"


def pool(run_dir: Path, player: int) -> list[tuple[str, PolicyConfig]]:
    """The player's initial policy and its saved checkpoints, as (label, policy config)."""
    cfg = run_config(run_dir)
    initial = (cfg.player1 if player == 1 else cfg.player2).policy
    seat = _seat(run_dir, player)
    out = [("initial", initial.model_copy(update={"lora": None}))]
    for ckpt in sorted((Path(run_dir) / "checkpoints").glob("step_*")):
        if (ckpt / seat / "policy").is_dir():
            out.append((ckpt.name, initial.model_copy(update={"model": str(ckpt / seat / "policy"), "lora": None})))
    return out


def cross_play(run_dir: Path, baseline_defenders: list[Path] = (), scenarios: int | None = None) -> dict:
    """Play every attacker of the run's pool against every defender (pool + baselines' final policies)."""
    cfg = run_config(run_dir)
    game = make_game(cfg.game)
    attackers = pool(run_dir, 1)
    defenders = pool(run_dir, 2)
    for other in baseline_defenders:
        final = Path(other) / "final"
        final = final / "player2" if (final / "player2").is_dir() else final
        defenders.append((f"baseline {Path(other).name}", run_config(other).player2.policy.model_copy(update={"model": str(final), "lora": None})))
    n = scenarios or cfg.eval_scenarios
    loaded = {label: load_policy(spec) for label, spec in defenders}
    payoff = np.zeros((len(attackers), len(defenders)))
    for i, (a_label, a_spec) in enumerate(attackers):
        attacker = Actor(load_policy(a_spec), cfg.player1.sampling)
        for j, (d_label, _) in enumerate(defenders):
            players = {1: attacker, 2: Actor(loaded[d_label], cfg.player2.sampling)}
            episodes, _ = play_scenarios(game, players, "eval", n, 1, (cfg.seed, "eval"))
            payoff[i, j] = float(np.mean([e.returns()[0] for e in episodes]))
    x, y = meta_nash(payoff)
    result = {
        "attackers": [a for a, _ in attackers],
        "defenders": [d for d, _ in defenders],
        "payoff_p1": payoff.tolist(),
        "meta_nash": {"attackers": x.tolist(), "defenders": y.tolist()},
        "nash_conv": population_nash_conv(payoff, x, y),
        "scenarios": n,
    }
    write_atomic(Path(run_dir) / "crossplay.json", json.dumps(result, indent=2))
    return result


def best_response(run_dir: Path, player: int, steps: int) -> dict:
    """Train a fresh `player` for `steps` steps against the other player's frozen final policy.

    Returns the learner's mean held-out return before and after, and the gain (written to
    best_response_p<player>.json in the run directory; the probe's own run is a subdirectory).
    """
    cfg = run_config(run_dir)
    other = 3 - player
    final = Path(run_dir) / "final"
    final = final / _seat(run_dir, other) if (final / _seat(run_dir, other)).is_dir() else final
    raw = json.loads(cfg.model_dump_json())
    raw[f"player{other}"]["policy"] = {**raw[f"player{other}"]["policy"], "model": str(final), "lora": None}
    raw.update(learners=[player], sharing="separate", schedule={"kind": "simultaneous"}, max_steps=steps,
               eval_every=0, save_every=0, run_dir=str(Path(run_dir) / f"best_response_p{player}"))
    probe = train_rl(validate(RLConfig, raw, "best-response probe"), overwrite=True)
    summary = json.loads((probe / "summary.json").read_text())
    key = f"eval/reward_p{player}"
    result = {"player": player, "steps": steps, "before": summary["eval_first"][key], "after": summary["eval_last"][key]}
    result["gain"] = result["after"] - result["before"]
    write_atomic(Path(run_dir) / f"best_response_p{player}.json", json.dumps(result, indent=2))
    return result
