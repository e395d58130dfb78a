"""Who learns when, and against whom: the schedule the RL driver consults every step.

simultaneous  every learner updates every step, against the other's current policy
alternating   k steps in which only player 2 updates, then m steps of player 1 (GPO's defender
              and attacker turns), against the other's current policy
population    every learner updates every step, each against a past checkpoint of the other
              drawn uniformly from the run's saved checkpoints and the initial policy
              (fictitious play: a best response to the other's average)
"""

from __future__ import annotations

import random
from pathlib import Path

from langgame.config import ScheduleConfig


def learning_now(schedule: ScheduleConfig, learners: list[int], iteration: int) -> list[int]:
    """The players that update at this step."""
    if len(learners) == 1 or schedule.kind != "alternating":
        return sorted(learners)
    phase = iteration % (schedule.player2_steps + schedule.player1_steps)
    return [2] if phase < schedule.player2_steps else [1]


def opponent_snapshot(run_dir: Path, seat: str, seed: int, iteration: int, player: int) -> Path | None:
    """population: a past checkpoint's policy directory of `seat`, or None for the initial policy."""
    options = [None] + sorted(p / seat / "policy" for p in (run_dir / "checkpoints").glob("step_*") if (p / seat / "policy").is_dir())
    return random.Random(f"{seed}-{iteration}-{player}").choice(options)
