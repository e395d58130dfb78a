"""qa: cooperative question answering (paper section 4.8), an identical-interest game.

Chance draws a question with a checkable answer from a seeded reasoning-gym task. Player 1 puts
it to player 2 -- verbatim when scripted, or in its own words as a learned prompter -- and
player 2 answers. Both receive reasoning-gym's score of the final answer (R1 = R2 in [0, 1]).
Questions are split into train and eval by a hash of their text: eval questions are never trained on.
"""

from __future__ import annotations

import hashlib
import random

import reasoning_gym
from pydantic import Field

from langgame.config import Strict
from langgame.data.synth import REASONERS, score
from langgame.game import Episode, Game, Message, Payoff, Turn, view
from langgame.rollout import with_turn_rewards

ANSWERER = "Answer the user's question. Finish with: The answer is <answer>."
PROMPTER = (
    "You help a user get a correct answer from an assistant. Ask the assistant this question clearly, "
    "keeping every number and word exact:\n{question}"
)


def split_of(question: str, eval_fraction: float) -> str:
    h = int(hashlib.sha256(question.encode()).hexdigest()[:8], 16) / 16**8
    return "eval" if h < eval_fraction else "train"


class QAGame(Game):
    name = "qa"
    payoff = Payoff.IDENTICAL_INTEREST

    class Options(Strict):
        tasks: list[str] = Field(default_factory=lambda: list(REASONERS))
        eval_fraction: float = Field(0.2, gt=0, lt=1)
        max_turns: int = Field(2, ge=2, description="player turns; 2 = one question, one answer")

    def __init__(self, options: Options | None = None):
        self.options = options or self.Options()
        self.max_turns = self.options.max_turns
        unknown = sorted(set(self.options.tasks) - set(reasoning_gym.factory.DATASETS))
        if unknown:
            raise ValueError(f"unknown reasoning-gym tasks {unknown}")

    def initial(self, rng: random.Random, split: str) -> Episode:
        while True:
            task = rng.choice(self.options.tasks)
            item = reasoning_gym.create_dataset(task, size=1, seed=rng.randrange(2**31))[0]
            if split_of(item["question"], self.options.eval_fraction) == split:
                meta = {"task": task, "question": item["question"], "answer": str(item["answer"])}
                return Episode([Turn(0, ANSWERER)], payoff=self.payoff, game=self.name, meta=meta)

    def observation(self, episode: Episode, player: int) -> list[Message]:
        if player == 2:
            return view(episode, 2, ANSWERER)
        return view(episode, 1, PROMPTER.format(question=episode.meta["question"]))

    def scripted_turn(self, episode: Episode, player: int) -> str:
        if player != 1:
            return super().scripted_turn(episode, player)
        return episode.meta["question"]

    def judge(self, episodes: list[Episode]) -> None:
        for e in episodes:
            last = max(i for i, t in enumerate(e.turns) if t.player == 2)
            s = min(1.0, score(e.meta["task"], e.turns[last].text, {"answer": e.meta["answer"], "metadata": {}}))
            with_turn_rewards(e, last, (s, s))

    def metrics(self, episodes: list[Episode]) -> dict[str, float]:
        scores = [e.returns()[1] for e in episodes]
        return {"accuracy": sum(s == 1.0 for s in scores) / len(scores), "score": sum(scores) / len(scores)}
