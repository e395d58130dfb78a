"""openspiel: an OpenSpiel game (Kuhn, Leduc, matrix games, ...) played by sampled text turns (stage rl).

The acting LM sees the game's rules (system), then for each of its earlier decisions the situation it
saw (user) and its reply (assistant), then the current situation: the texts of games/spiel.py's views,
functions of its information state (and, by perfect recall, so are the earlier ones); by default two
example exchanges of the reply format on actions of no game come first (`format_examples`). The action is the
reply's first word (any case, a trailing punctuation mark ignored) when it is a legal action word; any other reply plays the
fallback action (the first legal one: pass, check, fold, a matrix game's first action), is counted
(metric illegal_p<i>) and costs its player `illegal_penalty` as shaping outside the game's payoff. At
the end each player's OpenSpiel return is its reward, received at the last turn; the payoff kind is the
game's. A player with no policy plays uniformly at random (a fixed opponent to learn against).

Chance (the deal, Leduc's public card) is drawn from the episode's seed; train and eval draw from the
same deals (Kuhn has six). The measure of play is exact: at every information state, prompted with the
chat it would see there, the LM's probability m_a that its reply starts with word_a (lower case or
capitalised; games/spiel.py's choice_logprobs with eot=False). `policy_metrics` gives the exploitability
and NashConv (equilibrium.py) of the policy on legal replies (m_a renormalised) and of the policy as
played (m_a, the rest on the fallback action: _played), and the mean legal mass sum_a m_a (legal_p<i>).
"""

from __future__ import annotations

import random
import re
from typing import Literal

import numpy as np
import pyspiel
import torch
from open_spiel.python import policy as policy_lib
from pydantic import Field

from langgame.config import Strict
from langgame.equilibrium import CONSTANT_SUM, exploitability, nash_conv
from langgame.game import Episode, Game, Message, Payoff, Turn
from langgame.games.spiel import choice_logprobs, load_game
from langgame.rollout import with_turn_rewards

# the reply format, shown on actions of no game: the shipped SmolLM2 starts its reply with a legal word
# about 11% of the time in Kuhn poker with these (0.1% without), 64% in rock-paper-scissors (0.5%)
FORMAT_EXAMPLES = (("user", "Example. Legal actions: left, right. Reply with one word."), ("assistant", "left"),
                   ("user", "Example. Legal actions: up, down. Reply with one word."), ("assistant", "down"))
PAYOFFS = {pyspiel.GameType.Utility.ZERO_SUM: Payoff.ZERO_SUM, pyspiel.GameType.Utility.IDENTICAL: Payoff.IDENTICAL_INTEREST}


class Options(Strict):
    game: str = Field("kuhn_poker", description="OpenSpiel game name, parameters allowed (games/spiel.py lists what is supported)")
    text: Literal["full", "compact"] = Field("full", description="full: rules and the situation in words; compact: information-state string and legal words")
    illegal_penalty: float = Field(1.0, ge=0, description="shaping cost of a reply that is not a legal action word")
    format_examples: bool = Field(True, description="show two example exchanges of the reply format (actions of no game) "
                                  "and end each situation with 'Reply with one word.'")
    micro_batch: int = Field(32, gt=0, description="sequences per forward pass when scoring policies for exploitability")


def parse(reply: str, words: dict[int, str]) -> int | None:
    """The OpenSpiel action whose word is the reply's first word, or None."""
    first = re.match(r"\s*(\S+)", reply)
    word = first.group(1).rstrip(".,;:!?").lower() if first else None
    return next((a for a, w in words.items() if w.lower() == word), None)


class OpenSpielGame(Game):
    name = "openspiel"
    payoff = Payoff.GENERAL_SUM  # each episode carries its game's own kind
    Options = Options

    def __init__(self, options: Options):
        self.options = options
        self.spiel = load_game(options.game, options.text)
        self.label = options.game
        self.kind = PAYOFFS.get(self.spiel.game.get_type().utility, Payoff.GENERAL_SUM)

    def replay(self, history: list[int]) -> pyspiel.State:
        state = self.spiel.game.new_initial_state()
        for a in history:
            state.apply_action(a)
        return state

    def _chance(self, state: pyspiel.State, history: list[int], seed: int) -> None:
        """Resolve chance nodes from the episode's seed (the same draw for the same history)."""
        while state.is_chance_node():
            actions, probs = zip(*state.chance_outcomes())
            a = random.Random(f"{seed}/{len(history)}").choices(actions, probs)[0]
            state.apply_action(a)
            history.append(a)

    def initial(self, rng: random.Random, split: str) -> Episode:
        seed, history = rng.getrandbits(63), []
        self._chance(self.spiel.game.new_initial_state(), history, seed)
        return Episode([], self.kind, game=self.name, meta={"seed": seed, "history": history, "illegal": [0, 0]})

    def current_player(self, episode: Episode) -> int | None:
        state = self.replay(episode.meta["history"])
        return None if state.is_terminal() else state.current_player() + 1

    def transcript(self, history: list[int], player: int) -> tuple[str, list[tuple[str, str | None]]]:
        """The rules and, at each of `player`'s decisions along `history`, (situation, the word of the
        action taken there, or None at the last, undecided one)."""
        state, rules, decisions = self.spiel.game.new_initial_state(), "", []
        for a in [*history, None]:
            if not state.is_chance_node() and not state.is_terminal() and state.current_player() == player - 1:
                v = self.spiel.view(state)
                rules = v.rules
                decisions.append((v.situation, None if a is None else v.words[a]))
            if a is None:
                break
            state.apply_action(a)
        return rules, decisions

    def chat(self, history: list[int], player: int, episode: Episode | None = None) -> list[Message]:
        """What `player` sees after `history`: the rules, then at each of its decisions the situation
        and its reply: the episode's turn, or (no episode) the action word as context, owned by no player."""
        rules, decisions = self.transcript(history, player)
        own = iter([(k, t) for k, t in enumerate(episode.turns) if t.player == player] if episode else [])
        chat = [Message("system", Turn(0, rules), -1)] if rules else []
        suffix = ""
        if self.options.format_examples:
            chat += [Message(role, Turn(0, text), -1) for role, text in FORMAT_EXAMPLES]
            suffix = " Reply with one word."
        for situation, word in decisions:
            chat.append(Message("user", Turn(0, situation + suffix), -1))
            if word is not None:
                k, turn = next(own, (-1, Turn(0, word)))
                chat.append(Message("assistant", turn, k))
        return chat

    def observation(self, episode: Episode, player: int) -> list[Message]:
        return self.chat(episode.meta["history"], player, episode)

    def apply(self, episode: Episode, turn: Turn) -> None:
        history = episode.meta["history"]
        state = self.replay(history)
        words = self.spiel.view(state).words
        action = parse(turn.text, words)
        if action is None:
            episode.meta["illegal"][turn.player - 1] += 1
            action = min(words)
        episode.turns.append(turn)
        state.apply_action(action)
        history.append(action)
        self._chance(state, history, episode.meta["seed"])

    def scripted_turn(self, episode: Episode, player: int) -> str:
        """Uniform random over the legal actions, seeded by the episode and its history."""
        history = episode.meta["history"]
        words = self.spiel.view(self.replay(history)).words
        return random.Random(f"{episode.meta['seed']}/uniform/{len(history)}").choice(sorted(words.items()))[1]

    def judge(self, episodes: list[Episode]) -> None:
        for e in episodes:
            returns = self.replay(e.meta["history"]).returns()
            with_turn_rewards(e, len(e.turns) - 1, (float(returns[0]), float(returns[1])))
            penalty = self.options.illegal_penalty
            e.meta["shaping"] = {str(p): -penalty * e.meta["illegal"][p - 1] for p in (1, 2) if e.meta["illegal"][p - 1]}

    def metrics(self, episodes: list[Episode]) -> dict[str, float]:
        out = {}
        for p in (1, 2):
            replies = sum(t.player == p for e in episodes for t in e.turns)
            if replies:
                out[f"illegal_p{p}"] = sum(e.meta["illegal"][p - 1] for e in episodes) / replies
        return out

    @torch.no_grad()
    def policy_metrics(self, policies: dict) -> dict[str, float]:
        """Exact exploitability / NashConv of the profile on legal replies, and of the profile as played
        (the probability of a reply that starts with no legal word goes to the fallback action), and
        each LM player's mean probability of a legal reply over its information states (legal_p<i>).
        A player with no policy is uniform."""
        legal_only = policy_lib.TabularPolicy(self.spiel.game)  # uniform over legal actions to start with
        played, out = legal_only.__copy__(), {}
        for p, policy in policies.items():
            if policy is None:
                continue
            rows = [legal_only.state_lookup[key] for key in legal_only.states_per_player[p - 1]]
            prompts, choices, actions = [], [], []
            for r in rows:
                state = legal_only.states[r]
                prompts.append(self.chat(state.history(), p))  # earlier replies are context: only the new one is scored
                words = self.spiel.view(state).words
                actions.append(list(words))  # ascending: the fallback first
                choices.append([w for word in words.values() for w in (word.lower(), word.capitalize())])
            logp = choice_logprobs(policy, prompts, choices, self.options.micro_batch, eot=False, normalise=False)
            masses = []
            for i, (r, legal) in enumerate(zip(rows, actions)):
                mass = logp[i, : 2 * len(legal)].view(len(legal), 2).logsumexp(-1).double().exp().cpu().numpy()
                masses.append(min(mass.sum(), 1.0))
                for table in (legal_only, played):
                    table.action_probability_array[r] = 0.0
                legal_only.action_probability_array[r, legal] = mass / mass.sum()
                row = mass + np.eye(len(legal))[0] * (1.0 - masses[-1])
                played.action_probability_array[r, legal] = row / row.sum()
            out[f"legal_p{p}"] = float(np.mean(masses))
        for name, table in (("", legal_only), ("_played", played)):
            if self.spiel.game.get_type().utility in CONSTANT_SUM:
                out[f"exploitability{name}"] = exploitability(self.spiel, table)
            out[f"nash_conv{name}"] = nash_conv(self.spiel, table)
        return out
