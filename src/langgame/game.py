"""The paper's game formalism (section 3): episodes, the player function, returns, payoff kinds.

An episode z is an ordered list of turns. Player 1 (the user) and player 2 (the LLM) take turns;
player 0 is the environment (OpenSpiel's "chance"): context such as a system prompt, owned by
nobody. Rendering an episode through a chat template gives the token sequence and the owner
P(s_t) of every action a_t; the end-of-turn token belongs to the player whose turn it closes,
and template formatting (role headers, separators) belongs to player 0.
"""

from __future__ import annotations

import enum
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from langgame.errors import LanggameError

PLAYERS = (1, 2)
THOUGHT_TAGS = ("<think>\n", "\n</think>\n")


class PayoffError(LanggameError):
    """An episode's returns contradict the payoff kind its game declares."""


class TemplateError(LanggameError):
    """A chat template cannot be split into turns with owned end-of-turn tokens."""


class Payoff(str, enum.Enum):
    """How the two returns relate: R1 + R2 = 0, R1 = R2, or R1 + R2 = c(z)."""

    ZERO_SUM = "zero_sum"
    IDENTICAL_INTEREST = "identical_interest"
    GENERAL_SUM = "general_sum"

    def check(self, returns: tuple[float, float], tol: float = 1e-6, where: str = "") -> None:
        r1, r2 = returns
        bad = (self is Payoff.ZERO_SUM and abs(r1 + r2) > tol) or (
            self is Payoff.IDENTICAL_INTEREST and abs(r1 - r2) > tol
        )
        if bad:
            raise PayoffError(f"{where or 'episode'}: returns (R1={r1:g}, R2={r2:g}) are not {self.value}")


@dataclass(frozen=True)
class Turn:
    """One turn: the tokens one player emits until its end-of-turn token.

    player: 0 (context), 1 or 2. thought: player two's reasoning segment, emitted before `text`
    inside THOUGHT_TAGS (the Q-C-A structure of section 5.1). rewards: (r1, r2) that both players
    receive when this turn ends. For a sampled turn, tokens are the ids the player sampled (with
    its tokenizer; the end-of-turn token last unless truncated), logprobs their behaviour
    log-probs (same length), and truncated marks a turn cut at the length limit.
    """

    player: int
    text: str
    thought: str | None = None
    rewards: tuple[float, float] = (0.0, 0.0)
    tokens: tuple[int, ...] | None = None
    logprobs: tuple[float, ...] | None = None
    truncated: bool = False

    def __post_init__(self) -> None:
        if self.player not in (0, 1, 2):
            raise ValueError(f"turn player must be 0, 1 or 2, got {self.player!r}")


@dataclass
class Episode:
    """A terminal history z: turns, the game's payoff kind, provenance and free-form metadata."""

    turns: list[Turn]
    payoff: Payoff = Payoff.GENERAL_SUM
    id: str = ""
    game: str = ""
    source: str = ""
    meta: dict = field(default_factory=dict)
    state: Any = field(default=None, repr=False, compare=False)  # the game's live state (an environment), never saved

    def returns(self) -> tuple[float, float]:
        """(R1(z), R2(z)): each player's sum of rewards over the episode (section 3)."""
        r1 = sum(t.rewards[0] for t in self.turns)
        r2 = sum(t.rewards[1] for t in self.turns)
        return (r1, r2)

    def check_payoff(self) -> None:
        self.payoff.check(self.returns(), where=self.source or self.id or "episode")

    def messages(self, viewer: int = 2) -> list[Message]:
        """The chat the `viewer` observes: its own turns are 'assistant', the other's 'user'."""
        roles = {0: "system", viewer: "assistant", 3 - viewer: "user"}
        return [Message(roles[t.player], t, i) for i, t in enumerate(self.turns)]


@dataclass(frozen=True)
class Message:
    role: str
    turn: Turn
    index: int


@dataclass(frozen=True)
class StepView:
    """What a player that is not a language model (a small network, e.g. an RL student) sees of an
    episode: its input in every state it acted in, then in the current state.

    inputs: {name: array [n + 1, ...]}; actions: its n actions (ids into its action set); turns:
    the episode turn index of each action; player: whose view it is.
    """

    inputs: dict[str, np.ndarray]
    actions: tuple[int, ...]
    turns: tuple[int, ...]
    player: int


@dataclass
class Rendered:
    """An episode as tokens. All arrays have shape [T].

    ids: token ids. owner: the player whose action each token is (0 for context and template
    formatting). turn: index of the episode turn the token acts in (-1 for formatting).
    thought: True on player two's reasoning tokens (tags included). inputs: for a player that is
    not a language model, its input in the state before each token ({name: [T, ...]}; the state
    of an LM is the token prefix itself).
    """

    ids: np.ndarray
    owner: np.ndarray
    turn: np.ndarray
    thought: np.ndarray
    inputs: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.ids)


class Game(ABC):
    """A two-player language game G (section 3), with an OpenSpiel-like interface.

    Chance draws the initial context (`initial`), the player function P says who acts
    (`current_player`; players alternate from `first_player` for `max_turns` player turns), each
    player acts on its own view of the history (`observation`), and at terminal histories the
    game's judge sets every turn's rewards (`judge`). A game may also provide a fixed scripted
    policy for a player (`scripted_turn`), e.g. attacks drawn from a corpus.
    """

    name: ClassVar[str]
    payoff: ClassVar[Payoff]
    max_turns: int = 2
    first_player: int = 1

    @abstractmethod
    def initial(self, rng: random.Random, split: str) -> Episode:
        """A new episode at the root: context turns and meta drawn from the `split` ("train" or "eval") scenarios."""

    def current_player(self, episode: Episode) -> int | None:
        """P(s): the player to act, or None at a terminal history."""
        acted = sum(t.player in PLAYERS for t in episode.turns)
        if acted >= self.max_turns:
            return None
        return self.first_player if acted % 2 == 0 else 3 - self.first_player

    @abstractmethod
    def observation(self, episode: Episode, player: int) -> list[Message] | StepView:
        """The chat `player` acts on: its role prompt and the turns it sees (its own as 'assistant');
        a StepView for a player that is not a language model."""

    def views(self, episode: Episode, player: int) -> list[list[Message] | StepView]:
        """The player's views of a finished episode for learning, one experience row each, every one of
        its sampled turns in exactly one: by default its observation (one chat holds all its turns). A
        game whose player acts on independent views (several attempts at one task, each seeing only the
        task) returns one per turn, each the observation it acted on followed by that turn."""
        return [self.observation(episode, player)]

    def apply(self, episode: Episode, turn: Turn) -> None:
        """Append `turn` to the episode and advance the game's state (e.g. step its environment)."""
        episode.turns.append(turn)

    @abstractmethod
    def judge(self, episodes: list[Episode]) -> None:
        """Set the rewards of terminal episodes in place (batched, so learned judges run once per batch)."""

    def scripted_turn(self, episode: Episode, player: int) -> str:
        raise LanggameError(f"game {self.name!r} has no scripted policy for player {player}")

    def metrics(self, episodes: list[Episode]) -> dict[str, float]:
        """Game-specific measurements of judged episodes (e.g. leak rate, answer accuracy)."""
        return {}

    def policy_metrics(self, policies: dict) -> dict[str, float]:
        """Exact measurements of the players' policies {1: Policy | None, 2: ...} themselves, not of
        sampled episodes (e.g. an OpenSpiel game's exploitability); {} where there are none."""
        return {}

    def state_dict(self) -> dict:
        """JSON state that a resumed run must restore (e.g. an attacker's history of past attacks)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def view(episode: Episode, viewer: int, system: str | None = None) -> list[Message]:
    """The players' turns as `viewer` sees them, after an optional role prompt (not an episode turn)."""
    head = [Message("system", Turn(0, system), -1)] if system is not None else []
    return head + [m for m in episode.messages(viewer) if m.turn.player != 0]


def _template_pieces(tokenizer, roles: list[str]) -> list[str]:
    """Render the chat template around sentinel contents; return the len(roles)+1 formatting strings."""
    sentinels = [f"\ue000{i}\ue001" for i in range(len(roles))]
    chat = [{"role": r, "content": s} for r, s in zip(roles, sentinels)]
    text = tokenizer.apply_chat_template(chat, tokenize=False)
    pieces, pos = [], 0
    for s in sentinels:
        i = text.find(s, pos)
        if i < 0 or text.count(s) != 1:
            raise TemplateError(
                f"chat template of {tokenizer.name_or_path!r} does not render message content verbatim "
                f"for roles {roles}; langgame needs a template that does"
            )
        pieces.append(text[pos:i])
        pos = i + len(s)
    pieces.append(text[pos:])
    return pieces


def render(messages: list[Message], tokenizer, eot_token: str, generation_prompt: bool = False) -> Rendered:
    """Tokenize a chat segment by segment so that every token has exactly one owner.

    Content is tokenized with special tokens split, so a player cannot forge control tokens by
    writing them as text; the end-of-turn token after each player's content is owned by that player.
    A sampled turn contributes its token ids verbatim; if it was truncated, the environment closes
    it (the end-of-turn token is then owned by player 0). With generation_prompt, the sequence
    ends with the header of a new assistant turn: the prompt from which the next action is sampled.
    """
    roles = [m.role for m in messages] + (["assistant"] if generation_prompt else [])
    pieces = _template_pieces(tokenizer, roles)
    ids: list[int] = []
    owner: list[int] = []
    turn: list[int] = []
    thought: list[bool] = []

    def emit_ids(new: list[int], who: int, index: int, is_thought: bool = False) -> None:
        ids.extend(new)
        owner.extend([who] * len(new))
        turn.extend([index] * len(new))
        thought.extend([is_thought] * len(new))

    def emit(text: str, who: int, index: int, is_thought: bool = False, split: bool = True) -> None:
        if text:
            emit_ids(tokenizer(text, add_special_tokens=False, split_special_tokens=split)["input_ids"], who, index, is_thought)

    emit(pieces[0], 0, -1, split=False)
    for m, after in zip(messages, pieces[1:]):
        t, who = m.turn, m.turn.player
        if not after.startswith(eot_token):
            raise TemplateError(
                f"chat template of {tokenizer.name_or_path!r} does not close a {m.role!r} turn with the "
                f"end-of-turn token {eot_token!r}"
            )
        if t.tokens is not None:
            emit_ids(list(t.tokens), who, m.index)
            if t.truncated:
                emit(eot_token, 0, -1, split=False)
        else:
            if t.thought is not None:
                for part in (THOUGHT_TAGS[0], t.thought, THOUGHT_TAGS[1]):
                    emit(part, who, m.index, is_thought=True)
            emit(t.text, who, m.index)
            emit(eot_token, who, m.index, split=False)
        emit(after[len(eot_token):], 0, -1, split=False)
    return Rendered(
        ids=np.asarray(ids, dtype=np.int64),
        owner=np.asarray(owner, dtype=np.int8),
        turn=np.asarray(turn, dtype=np.int32),
        thought=np.asarray(thought, dtype=bool),
    )


def reward_to_go(episode: Episode, rendered: Rendered, player: int) -> np.ndarray:
    """Monte-Carlo Q^i(s_t, a_t) from one episode (eq. 4): the player's rewards from action t on.

    Each turn's reward r^i is placed on that turn's last token (its end-of-turn action).
    Returns float64 [T]; entry t is sum_{t' >= t} r^i_{t'}.
    """
    r = np.zeros(len(rendered), dtype=np.float64)
    for k, t in enumerate(episode.turns):
        positions = np.flatnonzero(rendered.turn == k)
        if len(positions):
            r[positions[-1]] += t.rewards[player - 1]
    return np.cumsum(r[::-1])[::-1].copy()


def learner_rewards(episode: Episode, rendered: Rendered, player: int, until: int | None = None) -> np.ndarray:
    """The player's rewards in the MDP induced by fixing the other player (Fig. 3). float64 [T].

    Turn k's reward r^i goes on the player's last own token in a turn up to k (for its own turn,
    its end-of-turn action), whether or not turn k is in its view; rewards before its first action
    are lost to it. A
    shaping term of the player's learning, outside the game's payoff (episode.meta["shaping"],
    e.g. an attacker's diversity penalty), goes on its last token. until: for one of several views
    of the episode (Game.views), the turn where the next one starts: rewards from it on, and the
    shaping, belong to later views.
    """
    r = np.zeros(len(rendered), dtype=np.float64)
    own = np.flatnonzero(rendered.owner == player)
    shaping = episode.meta.get("shaping", {}).get(str(player), 0.0)
    if shaping and len(own) and until is None:
        r[own[-1]] += shaping
    for k, t in enumerate(episode.turns[:until]):
        reward = t.rewards[player - 1]
        earlier = own[rendered.turn[own] <= k]
        if reward and len(earlier):
            r[earlier[-1]] += reward
    return r


def mc_q(returns: list[float] | np.ndarray) -> tuple[float, float]:
    """Monte-Carlo estimate of Q^i(s, a) from K returns of episodes that share the edge (s, a).

    Returns (mean, standard error of the mean).
    """
    x = np.asarray(returns, dtype=np.float64)
    if x.size == 0:
        raise ValueError("mc_q needs at least one return")
    se = float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else float("nan")
    return float(x.mean()), se
