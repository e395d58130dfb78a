"""The benchmark's game: a scripted user sends one of 32 fixed prompts; the reply earns rollout_train.reward."""

from __future__ import annotations

import random

from pydantic import BaseModel
from rollout_train import prompts, reward

from langgame.game import Episode, Game, Message, Payoff, view
from langgame.rollout import with_turn_rewards


class PromptGame(Game):
    name = "bench_prompts"
    payoff = Payoff.GENERAL_SUM

    class Options(BaseModel):
        pass

    def __init__(self, options=None):
        self.max_turns = 2

    def initial(self, rng: random.Random, split: str) -> Episode:
        return Episode([], payoff=self.payoff, meta={"prompt": rng.choice(prompts()[:8])})

    def observation(self, episode: Episode, player: int) -> list[Message]:
        return view(episode, player)

    def scripted_turn(self, episode: Episode, player: int) -> str:
        return episode.meta["prompt"]

    def judge(self, episodes: list[Episode]) -> None:
        scores = reward([e.meta["prompt"] for e in episodes], [e.turns[-1].text for e in episodes])
        for e, s in zip(episodes, scores):
            with_turn_rewards(e, len(e.turns) - 1, (0.0, s))
