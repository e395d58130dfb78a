"""babyai: an LLM teacher and an RL student in a BabyAI level (the bidirectional-feedback seed), an
identical-interest game.

Chance draws a level instance (a seed: even seeds train, odd seeds eval). Player 2, the student,
is a network (nets.BabyAINet) whose every turn is one environment action, taken on its partial
7x7 view, the mission and the teacher's current hint. Player 1, the teacher, speaks every
`hint_every` student steps (before the first one, then every K): it reads a text rendering of
what the student sees and replies with an action for it; the hint (parsed to one of the seven
actions, or none) becomes part of the student's observation. A reply naming no action is a
defined fallback, hint none, counted in `hint_fallback`. Both players receive the environment's
reward on the student's turn that earns it (R1 = R2 = 1 - 0.9 steps / max_steps on success), so
the teacher's policy gradient credits each hint with the student's return after it
(game.learner_rewards). minigrid's BabyAIBot is the oracle: the scripted teacher (policy: null)
speaks its action, and every hint is scored for agreement with it (`hint_agreement`).
hint_every 0 is the student alone: no teacher turns. `oracle_chats` writes the bot's hints as the
teacher's chats: behaviour-cloning data of an optimal player 1 (`langgame data babyai`).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import minigrid  # noqa: F401  (registers the BabyAI levels with gymnasium)
import numpy as np
from minigrid.core.constants import COLOR_NAMES, IDX_TO_COLOR, IDX_TO_OBJECT, OBJECT_TO_IDX, STATE_TO_IDX
from minigrid.utils.baby_ai_bot import BabyAIBot
from pydantic import Field, field_validator

from langgame.config import Strict
from langgame.data.episodes import write_episodes
from langgame.game import Episode, Game, Message, Payoff, StepView, Turn
from langgame.rollout import with_turn_rewards

ACTIONS = ("left", "right", "forward", "pickup", "drop", "toggle", "done")  # minigrid's action ids 0-6
LEVELS = sorted(name for name in gym.registry if name.startswith("BabyAI-"))
WORDS = ("go", "to", "the", "a", "pick", "up", "open", "put", "next", "then", "after", "you", "and", "on", "your",
         "left", "right", "in", "front", "of", "behind", "door", "ball", "box", "key", "object", *COLOR_NAMES)
WORD_IDS = {w: i + 2 for i, w in enumerate(WORDS)}  # 0: padding, 1: a word the student does not know
MISSION_LENGTH = 16
MAX_HINT_AGE = 16
NET_CONFIG = {  # nets.BabyAINet over the inputs `encode` makes
    "n_objects": len(OBJECT_TO_IDX), "n_colors": len(IDX_TO_COLOR), "n_states": len(STATE_TO_IDX), "vocab": len(WORDS) + 2,
    "actions": list(ACTIONS), "max_hint_age": MAX_HINT_AGE, "hidden_size": 128,
}
TEACHER = "You guide an agent in a grid world. Told what it sees, reply with its next action in one word."
QUESTION = "Action: left, right, forward, pickup, drop, toggle or done?"
HINT_WORDS = [  # the first of these in a reply is the suggested action
    (re.compile(r"\bleft\b"), 0), (re.compile(r"\bright\b"), 1), (re.compile(r"\b(forward|ahead|straight)\b"), 2),
    (re.compile(r"\bpick\s*up\b"), 3), (re.compile(r"\bdrop\b"), 4), (re.compile(r"\b(toggle|open)\b"), 5),
    (re.compile(r"\bdone\b"), 6),
]


def parse_hint(text: str) -> int | None:
    """The action a teacher's reply suggests (its first action word), or None if it names none."""
    found = [(m.start(), action) for pattern, action in HINT_WORDS for m in [pattern.search(text.lower())] if m]
    return min(found)[1] if found else None


def describe(obs: dict) -> str:
    """What the student sees, in words: each visible object by its distance ahead and to the side, and the cell in front."""
    image, (cx, cy) = obs["image"], (3, 6)  # the agent stands at the bottom centre of its view, facing up
    seen = []
    for x in range(7):
        for y in range(7):
            kind, color, state = (int(v) for v in image[x, y])
            name = IDX_TO_OBJECT[kind]
            if name in ("unseen", "empty", "wall", "floor", "agent"):
                continue
            door = f"{('open', 'closed', 'locked')[state]} " if name == "door" else ""
            side = cx - x
            where = [f"{cy - y} ahead" if cy - y else "level with you"]
            where += [f"{abs(side)} {'left' if side > 0 else 'right'}"] if side else []
            seen.append(f"{door}{IDX_TO_COLOR[color]} {name} ({', '.join(where)})")
    front = IDX_TO_OBJECT[int(image[cx, cy - 1, 0])]
    front = {"empty": "nothing", "unseen": "nothing visible"}.get(front, f"a {front}")
    return f"{obs['mission'].capitalize()}. You see: {'; '.join(seen) or 'no objects'}. In front: {front}. {QUESTION}"


def encode(obs: dict, hint: int | None, age: int) -> dict[str, np.ndarray]:
    """The student's input in one state (nets.BabyAINet): its view, direction, mission words, hint and hint age."""
    words = [WORD_IDS.get(w, 1) for w in obs["mission"].lower().replace(",", " ").split()][:MISSION_LENGTH]
    return {
        "image": np.asarray(obs["image"], dtype=np.int64),
        "direction": np.int64(obs["direction"]),
        "mission": np.asarray(words + [0] * (MISSION_LENGTH - len(words)), dtype=np.int64),
        "hint": np.int64(0 if hint is None else hint + 1),
        "hint_age": np.int64(min(age, MAX_HINT_AGE - 1)),
    }


@dataclass
class State:
    """A live episode: the environment, its last observation, the current hint, and what each player saw.

    inputs/actions/turns: the student's input, action and turn index at each of its steps;
    described: the teacher's description of the state at each of its turns (by turn index).
    """

    env: gym.Env
    obs: dict
    steps: int = 0
    done: bool = False
    hint: int | None = None
    hint_age: int = 0
    hinted_at: int = -1
    inputs: list = field(default_factory=list)
    actions: list = field(default_factory=list)
    turns: list = field(default_factory=list)
    described: dict = field(default_factory=dict)
    bot: BabyAIBot | None = None  # follows the student's every step (it keeps a map of what it has seen)
    suggestion: int | None = None  # the bot's action in the current state


class BabyAIGame(Game):
    name = "babyai"
    payoff = Payoff.IDENTICAL_INTEREST

    class Options(Strict):
        level: str = "BabyAI-GoToRedBallNoDists-v0"
        hint_every: int = Field(4, ge=0, description="student steps between the teacher's hints; 0: no teacher")

        @field_validator("level")
        @classmethod
        def _known(cls, level: str) -> str:
            if level not in LEVELS:
                raise ValueError(f"unknown BabyAI level {level!r}; valid levels: {', '.join(LEVELS)}")
            return level

    def __init__(self, options: Options | None = None):
        self.options = options or self.Options()
        self.max_turns = 10**9  # an episode ends when its environment does

    def initial(self, rng: random.Random, split: str) -> Episode:
        seed = 2 * rng.randrange(2**30) + (split == "eval")
        env = gym.make(self.options.level).unwrapped
        obs, _ = env.reset(seed=seed)
        state = State(env, obs)
        if self.options.hint_every:
            self._replan(state, None)
        meta = {"level": self.options.level, "seed": seed, "mission": obs["mission"], "hints": [], "bot": []}
        return Episode([Turn(0, f"Mission: {obs['mission']}")], payoff=self.payoff, game=self.name, meta=meta, state=state)

    def current_player(self, episode: Episode) -> int | None:
        s, every = episode.state, self.options.hint_every
        if s.done:
            return None
        return 1 if every and s.steps % every == 0 and s.hinted_at != s.steps else 2

    def observation(self, episode: Episode, player: int) -> list[Message] | StepView:
        s = episode.state
        if player == 2:
            now = encode(s.obs, s.hint, s.hint_age)
            rows = s.inputs + [now]
            inputs = {k: np.stack([r[k] for r in rows]) for k in now}
            return StepView(inputs, tuple(s.actions), tuple(s.turns), 2)
        chat = [Message("system", Turn(0, TEACHER), -1)]
        for k, text in s.described.items():
            chat += [Message("user", Turn(0, text), -1), Message("assistant", episode.turns[k], k)]
        if self.current_player(episode) == 1:
            chat.append(Message("user", Turn(0, describe(s.obs)), -1))
        return chat

    def apply(self, episode: Episode, turn: Turn) -> None:
        s = episode.state
        index = len(episode.turns)
        episode.turns.append(turn)
        if turn.player == 1:
            s.described[index] = describe(s.obs)
            s.hint, s.hint_age, s.hinted_at = parse_hint(turn.text), 0, s.steps
            episode.meta["hints"].append(s.hint)
            episode.meta["bot"].append(self.bot_action(s))
            return
        action = turn.tokens[0] if turn.tokens is not None else ACTIONS.index(turn.text)
        s.inputs.append(encode(s.obs, s.hint, s.hint_age))
        s.actions.append(action)
        s.turns.append(index)
        s.obs, reward, terminated, truncated, _ = s.env.step(action)
        s.steps, s.hint_age, s.done = s.steps + 1, s.hint_age + 1, terminated or truncated
        if self.options.hint_every and not s.done:
            self._replan(s, action)
        if reward:
            with_turn_rewards(episode, index, (float(reward), float(reward)))

    @staticmethod
    def _replan(s: State, action_taken: int | None) -> None:
        """Tell the bot the student's last action and take its suggestion for the new state; a bot that
        cannot plan (it asserts on states it has no plan for) starts over from what the student sees now."""
        for fresh in (s.bot is None, True):
            try:
                if fresh:
                    s.bot, action_taken = BabyAIBot(s.env), None
                s.suggestion = int(s.bot.replan(action_taken))
                return
            except Exception:  # noqa: BLE001
                s.bot = None
        s.suggestion = None

    @staticmethod
    def bot_action(s: State) -> int | None:
        """BabyAIBot's action in the current state (None where it has no plan)."""
        return s.suggestion

    def scripted_turn(self, episode: Episode, player: int) -> str:
        """The oracle teacher: BabyAIBot's action."""
        action = self.bot_action(episode.state)
        return ACTIONS[action] if action is not None else "none"

    def judge(self, episodes: list[Episode]) -> None:
        """Rewards were set as the environment paid them; record each episode's outcome in its meta."""
        for e in episodes:
            e.meta["success"] = e.returns()[1] > 0
            e.meta["frames"] = e.state.steps

    def metrics(self, episodes: list[Episode]) -> dict[str, float]:
        """success, frames (student steps in all episodes), steps per episode; over the teacher's hints:
        hint_agreement (share equal to BabyAIBot's action, where it has one) and hint_fallback (no action named)."""
        out = {
            "success": float(np.mean([e.meta["success"] for e in episodes])),
            "frames": float(sum(e.meta["frames"] for e in episodes)),
            "steps": float(np.mean([e.meta["frames"] for e in episodes])),
        }
        pairs = [(h, b) for e in episodes for h, b in zip(e.meta["hints"], e.meta["bot"])]
        scored = [h == b for h, b in pairs if b is not None]
        if scored:
            out["hint_agreement"] = float(np.mean(scored))
        if pairs:
            out["hint_fallback"] = float(np.mean([h is None for h, _ in pairs]))
        return out


def teacher_chat(game: BabyAIGame, episode: Episode) -> Episode:
    """A finished episode as the teacher saw it, as an episode of its own: the role prompt (player 0), then per
    hint the scene (player 2's turn: the user's message in player 1's view) and the hint (player 1)."""
    chat = game.observation(episode, 1)
    turns = [Turn(0, TEACHER)] + [Turn(1 if m.role == "assistant" else 2, m.turn.text) for m in chat[1:]]
    return Episode(turns, game.payoff, game=game.name, meta={k: episode.meta[k] for k in ("level", "seed", "hints", "bot")})


def oracle_chats(options: BabyAIGame.Options, n: int, split: str, seed: int, explore: float) -> list[Episode]:
    """n teacher chats in which BabyAIBot is the teacher (every hint its action word) and the student follows the
    bot, or with probability `explore` (and where the bot has no plan) turns or moves at random, so that the
    scenes include states off the bot's path, as a learning student visits them."""
    game, rng = BabyAIGame(options), random.Random(seed)
    chats = []
    for _ in range(n):
        e = game.initial(rng, split)
        while (p := game.current_player(e)) is not None:
            if p == 1:
                game.apply(e, Turn(1, game.scripted_turn(e, 1)))
            else:
                bot = game.bot_action(e.state)
                a = rng.randrange(3) if bot is None or rng.random() < explore else bot
                game.apply(e, Turn(2, ACTIONS[a], tokens=(a,)))
        chats.append(teacher_chat(game, e))
    return chats


def write_data(out, options: BabyAIGame.Options, n_train: int = 1024, n_eval: int = 128, seed: int = 0,
               explore: float = 0.5) -> dict[str, Path]:
    """BabyAIBot's hints as the teacher's chats in `out`: hints (train level instances) and hints_eval (eval ones)."""
    return {name: write_episodes(Path(out) / f"{name}.parquet", oracle_chats(options, n, split, seed, explore))
            for name, n, split in (("hints", n_train, "train"), ("hints_eval", n_eval, "eval"))}
