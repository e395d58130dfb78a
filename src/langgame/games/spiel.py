"""OpenSpiel games as language games: the acting player reads its information state as text and
answers with one action word.

Seats. langgame's players 1 and 2 are OpenSpiel's players 0 and 1 (player 1 = OpenSpiel player 0,
who moves first in Kuhn, Leduc and the matrix games). Texts shown to a model say "player 1/2".

Supported games (load_game): kuhn_poker and leduc_poker with game-specific text; the matrix games
(matrix_rps, matrix_mp, ... any pyspiel.MatrixGame) with a payoff table; any other two-player
sequential game that has information-state strings and explicit chance, with a generic text built
from `information_state_string` and `action_to_string`. Matrix games are simultaneous-move: they
are played through `pyspiel.convert_to_turn_based`, where player 1 chooses first and player 2
chooses second WITHOUT seeing that choice (player 2 has one information state, whose string is the
same whatever player 1 chose), which is the same game in extensive form.

What a player sees (a View): a system message with the game's rules and a user message with its
private information (its card), the public history in words (who checked, bet, raised...), the pot
and the legal action words. Every renderer reads only `state.information_state_string()` and the
legal actions, so the text is a function of the information state and cannot leak hidden cards.
Action words depend on the situation: Kuhn's actions are pass/bet, or fold/call facing a bet;
Leduc's are check/bet, or fold/call/raise facing a bet; matrix games use the action names
("rock", "heads", ...).

Constrained decoding. The LM's policy over the legal actions of information state I is

    pi(a|I) = p_LM(word_a + <eot> | prompt(I)) / sum_{a' legal} p_LM(word_a' + <eot> | prompt(I)),

the probability of the whole action word followed by the end-of-turn token, renormalised over the
legal words. It is always defined (no output is ever "illegal"), a word that is a prefix of another
gets only its own mass (the <eot> must follow it), and it is differentiable: log pi is built from
`objective.policy_forward`, so a learning rule can take policy gradients through it. Sampling an
action samples from pi. Sequences (prompt + word + <eot>) of all legal actions of all states are
scored under `policy.autocast()`: the tokens every state's prompt begins with (the rules) once, then
each prompt once, continued by a micro-batch of its words (objective.prefix_cache, policy_forward),
and only the word and <eot> positions go through the LM head.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import pyspiel
import torch

from langgame.errors import LanggameError
from langgame.game import Message, Turn, render
from langgame.models import Policy
from langgame.objective import collate, policy_forward, prefix_cache, shared_prefix

SUPPORTED = (
    "supported: kuhn_poker, leduc_poker, matrix games (matrix_rps, matrix_mp, ...: simultaneous, played "
    "turn-based), and any other two-player sequential OpenSpiel game with information-state strings and "
    "explicit chance (generic text)"
)
REPLY = "Reply with exactly one of the legal actions and nothing else."
RESPONDER = 2  # the reply is the chat's assistant turn, whichever seat the LM plays in the spiel game


class SpielGameError(LanggameError):
    """An OpenSpiel game that is unknown or that the language adapter cannot play."""


@dataclass(frozen=True)
class View:
    """What the acting player sees: rules (system message), situation (user message) and, for each
    legal OpenSpiel action id, the word the LM must emit to take it."""

    rules: str
    situation: str
    words: dict[int, str]

    def messages(self) -> list[Message]:
        """The prompt as chat messages; both are context (turn player 0), the reply is the LM's."""
        return [Message("system", Turn(0, self.rules), 0), Message("user", Turn(0, self.situation), 1)]


@dataclass(frozen=True)
class SpielGame:
    """game: the sequential (turn-based) pyspiel game that states, policies and exploitability use.
    source: the game as loaded (the simultaneous matrix game before conversion)."""

    name: str
    game: pyspiel.Game
    source: pyspiel.Game
    renderer: Callable[[pyspiel.Game, pyspiel.State], View]

    def view(self, state: pyspiel.State) -> View:
        """The acting player's view of a decision state."""
        return self.renderer(self.source, state)


def load_game(name: str, text: str = "full") -> SpielGame:
    """Load an OpenSpiel game by name (parameters allowed: "leduc_poker(suit_isomorphism=true)").

    text: "full" (rules and the situation in words) or "compact" (OpenSpiel's information-state
    string and the legal words only: short sequences for small models trained from scratch).
    """
    game = _load_game(name)
    if text == "compact":
        full = game.renderer
        return SpielGame(game.name, game.game, game.source, lambda source, state: view_compact(full(source, state), state))
    if text != "full":
        raise SpielGameError(f"text must be 'full' or 'compact', got {text!r}")
    return game


def _load_game(name: str) -> SpielGame:
    if name.split("(")[0].strip() not in pyspiel.registered_names():  # checked first: OpenSpiel prints its whole list
        raise SpielGameError(f"unknown OpenSpiel game {name!r}; {SUPPORTED}")
    try:
        source = pyspiel.load_game(name)
    except pyspiel.SpielError as e:
        raise SpielGameError(f"OpenSpiel cannot load {name!r} ({str(e).splitlines()[0]}); {SUPPORTED}") from None
    kind, dynamics = source.get_type(), pyspiel.GameType.Dynamics
    if source.num_players() != 2:
        raise SpielGameError(f"game {name!r} has {source.num_players()} players, langgame games have 2; {SUPPORTED}")
    if kind.dynamics == dynamics.SIMULTANEOUS and isinstance(source, pyspiel.MatrixGame):
        return SpielGame(name, pyspiel.convert_to_turn_based(source), source, view_matrix)
    problem = (
        "simultaneous moves beyond a one-shot matrix game" if kind.dynamics == dynamics.SIMULTANEOUS
        else f"{kind.dynamics.name.lower()} dynamics" if kind.dynamics != dynamics.SEQUENTIAL
        else "no information-state strings" if not kind.provides_information_state_string
        else "sampled chance nodes" if kind.chance_mode == pyspiel.GameType.ChanceMode.SAMPLED_STOCHASTIC
        else None
    )  # fmt: skip
    if problem:
        raise SpielGameError(f"game {name!r} has {problem}, which the language adapter cannot play; {SUPPORTED}")
    default = source.get_parameters() == pyspiel.load_game(kind.short_name).get_parameters()
    renderer = RENDERERS.get(kind.short_name, view_generic) if default else view_generic
    return SpielGame(name, source, source, renderer)


# --- renderers: (source game, decision state) -> View; they read only the information state ---------

KUHN_CARDS = ("Jack", "Queen", "King")
KUHN_RULES = (
    "You are playing Kuhn poker. The deck has three cards: Jack < Queen < King. Each player antes 1 chip "
    "and is dealt one private card. Player 1 acts first. Without a bet to face you may pass or bet 1 chip; "
    "facing a bet you may fold (give up the pot) or call (add 1 chip). The hand ends after pass-pass, a fold "
    f"or a call; at the showdown the higher card takes the pot. {REPLY}"
)


def view_kuhn(source: pyspiel.Game, state: pyspiel.State) -> View:
    """Kuhn information state strings are the card id then the actions as p/b: "1pb"."""
    player = state.current_player()
    info = state.information_state_string(player)
    card, history = int(info[0]), info[1:]
    said = [f"player {1 + i % 2} {'bet' if c == 'b' else 'passed'}" for i, c in enumerate(history)]
    facing = "b" in history
    pot = 2 + history.count("b")
    situation = (
        f"You are player {player + 1}. Your card: {KUHN_CARDS[card]}. "
        f"{'Betting so far: ' + ', '.join(said) if said else 'You act first'}. Pot: {pot} chips. "
    )
    words = {0: "fold" if facing else "pass", 1: "call" if facing else "bet"}
    words = {a: words[a] for a in state.legal_actions()}
    return View(KUHN_RULES, situation + f"Legal actions: {', '.join(words.values())}.", words)


LEDUC_RANKS = ("Jack", "Queen", "King")
LEDUC_SUITS = ("hearts", "spades")
LEDUC_RULES = (
    "You are playing Leduc poker. The deck has six cards, two of each rank Jack < Queen < King (suits do not "
    "matter). Each player antes 1 chip and is dealt one private card; one public card is revealed after the "
    "first betting round. In both rounds player 1 acts first; a bet or raise is 2 chips in round 1 and 4 chips "
    "in round 2, at most two per round. Without a bet to face you may check or bet; facing a bet you may fold "
    "(give up the pot), call or raise. At the showdown a private card that pairs the public card wins, else "
    f"the higher private card wins; equal ranks split the pot. {REPLY}"
)


def leduc_card(card: int) -> str:
    """OpenSpiel's Leduc card id c has rank c // 2 and suit c % 2."""
    return f"{LEDUC_RANKS[card // 2]} of {LEDUC_SUITS[card % 2]}"


def _leduc_round(actions: list[int]) -> tuple[list[str], bool]:
    """Describe one betting round (0 fold, 1 call, 2 raise); also return whether a bet is open."""
    said, facing = [], False
    for i, a in enumerate(actions):
        verb = ("folded", "called" if facing else "checked", "raised" if facing else "bet")[a]
        said.append(f"player {1 + i % 2} {verb}")
        facing = a == 2
    return said, facing


def view_leduc(source: pyspiel.Game, state: pyspiel.State) -> View:
    """Leduc information state strings look like "[Private: 3][Round 2][Pot: 6][Money: 97 97][Public: 0]..."."""
    player = state.current_player()
    info = dict(re.findall(r"\[([^:\]]+): ?([^\]]*)\]", state.information_state_string(player)))
    rounds = [[int(a) for a in info[f"Round{r}"].split()] for r in (1, 2)]
    put_in = [100 - int(m) for m in info["Money"].split()]
    lines = [f"You are player {player + 1}. Your private card: {leduc_card(int(info['Private']))}."]
    if "Public" in info:
        lines.append(f"Public card: {leduc_card(int(info['Public']))}.")
    facing = False
    for r, actions in enumerate(rounds[: 1 + ("Public" in info)], start=1):
        said, facing = _leduc_round(actions)
        lines.append(f"Round {r} betting: {', '.join(said) if said else 'nothing yet'}.")
    lines.append(f"Pot: {info['Pot']} chips (you put in {put_in[player]}, your opponent {put_in[1 - player]}).")
    names = ("fold", "call", "raise") if facing else ("fold", "check", "bet")
    words = {a: names[a] for a in state.legal_actions()}
    lines.append(f"Legal actions: {', '.join(words.values())}.")
    return View(LEDUC_RULES, "\n".join(lines), words)


def view_matrix(source: pyspiel.MatrixGame, state: pyspiel.State) -> View:
    """A one-shot matrix game; the rules carry the whole payoff table (player 1's choice first)."""
    player = state.current_player()
    rows = [source.row_action_name(r).lower() for r in range(source.num_rows())]
    cols = [source.col_action_name(c).lower() for c in range(source.num_cols())]
    table = "\n".join(
        f"{rows[r]} vs {cols[c]}: {source.row_utility(r, c):g}, {source.col_utility(r, c):g}"
        for r in range(source.num_rows())
        for c in range(source.num_cols())
    )
    rules = (
        f"You are playing {source.get_type().long_name}, a one-shot game: both players choose at the same time "
        f"and neither sees the other's choice. Payoffs to player 1 and player 2 for each pair of choices "
        f"(player 1's first):\n{table}\n{REPLY}"
    )
    words = {a: (rows, cols)[player][a] for a in state.legal_actions()}
    situation = f"You are player {player + 1}. Your opponent chooses at the same time. Legal actions: {', '.join(words.values())}."
    return View(rules, situation, words)


def view_generic(source: pyspiel.Game, state: pyspiel.State) -> View:
    """Any sequential game: OpenSpiel's own information state string and action names."""
    player = state.current_player()
    words = {a: state.action_to_string(player, a).strip() for a in state.legal_actions()}
    if len(set(words.values())) != len(words):
        raise SpielGameError(f"game {source.get_type().short_name!r}: two legal actions have the same name; {SUPPORTED}")
    observation = ""
    if source.get_type().provides_observation_string:  # a function of the information state (perfect recall)
        observation = f"Your current observation:\n{state.observation_string(player)}\n"
    situation = (
        f"You are player {player + 1}. Your information state:\n{state.information_state_string(player)}\n"
        f"{observation}Legal actions: {', '.join(words.values())}."
    )
    return View(f"You are playing {source.get_type().long_name}. {REPLY}", situation, words)


def view_compact(full: View, state: pyspiel.State) -> View:
    """The information-state string and the legal words of the full view, with no rules text."""
    info = state.information_state_string(state.current_player())
    return View("", f"{info} | {' '.join(full.words.values())}", full.words)


RENDERERS = {"kuhn_poker": view_kuhn, "leduc_poker": view_leduc}


# --- constrained decoding ------------------------------------------------------------------------


def choice_logprobs(
    policy: Policy, prompts: list[list[Message]], choices: list[list[str]], micro_batch: int = 32, eot: bool = True,
    normalise: bool = True,
) -> torch.Tensor:
    """log pi(choice | prompt) over complete choices (word + <eot>), renormalised per prompt; with
    eot False, over replies that start with the word (its own tokens scored, not the <eot>); with
    normalise False, the LM's own log-probabilities of those replies (not renormalised).

    prompts: N chats; choices: N lists of distinct words (at least one each). Returns float32
    [N, K] (K = longest choice list) with gradients; entry [i, k] is log pi(choices[i][k] | prompts[i])
    and -inf past the end of row i. micro_batch: most choices per forward pass. The tokens every prompt
    begins with (a game's rules) are computed once, then each prompt once for its choices (a pass
    holds the choices of one prompt: objective.policy_forward).
    """
    n, k = len(prompts), max(len(c) for c in choices)
    device = next(policy.model.parameters()).device
    rendered, slots = [], []
    for i, (prompt, words) in enumerate(zip(prompts, choices)):
        for j, word in enumerate(words):
            reply = Message("assistant", Turn(RESPONDER, word), len(prompt))
            rendered.append(render([*prompt, reply], policy.tokenizer, policy.eot_token))
            slots.append((i, j))
    chunks, start = [], 0
    for words in choices:
        chunks += [range(s, min(s + micro_batch, start + len(words))) for s in range(start, start + len(words), micro_batch)]
        start += len(words)
    every = collate(rendered, policy.tokenizer.pad_token_id)
    common = shared_prefix(every.ids, every.attention, every.owner == RESPONDER)
    scores: list[torch.Tensor] = [torch.empty(())] * len(rendered)
    with policy.autocast():
        past = prefix_cache(policy.model, every.ids[:1, :common].to(device))
        skip = common if past is not None else 0
        for chunk in chunks:
            batch = collate([rendered[s] for s in chunk], policy.tokenizer.pad_token_id)
            where = batch.owner == RESPONDER
            if not eot:  # the reply's last owned token is its <eot>
                last = where.shape[1] - 1 - where.flip(-1).int().argmax(-1)
                where[torch.arange(len(where)), last] = False
            ids, attention, where = batch.ids[:, skip:].to(device), batch.attention[:, skip:].to(device), where[:, skip:].to(device)
            logp = policy_forward(policy.model, ids, attention, where, past=past).logp
            for s, total in zip(chunk, logp.sum(-1)):
                scores[s] = total
    rows, cols = torch.tensor(slots, device=device).T
    sequence = torch.full((n, k), float("-inf"), device=device).index_put((rows, cols), torch.stack(scores))
    return torch.log_softmax(sequence, dim=-1) if normalise else sequence


def action_logprobs(game: SpielGame, policy: Policy, states: list[pyspiel.State], micro_batch: int = 32) -> torch.Tensor:
    """log pi(a|I) of the LM at each state's information state, by constrained decoding.

    Returns float32 [num_states, game.game.num_distinct_actions()] with gradients, indexed by
    OpenSpiel action id; illegal actions are -inf (probability 0).
    """
    views = [game.view(s) for s in states]
    logp = choice_logprobs(policy, [v.messages() for v in views], [list(v.words.values()) for v in views], micro_batch)
    slots = [(i, j, a) for i, v in enumerate(views) for j, a in enumerate(v.words)]
    rows, cols, actions = torch.tensor(slots, device=logp.device).T
    out = torch.full((len(states), game.game.num_distinct_actions()), float("-inf"), device=logp.device)
    return out.index_put((rows, actions), logp[rows, cols])
