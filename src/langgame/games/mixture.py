"""mixture: a distribution over games (paper 4.5, eq. 10): chance first draws a game G_i with
probability proportional to its weight, then an episode of G_i.

Each episode is played, judged and measured by its own game; `episode.game` holds the component's
label, so learning rules can keep per-(game, role) baselines (reinforce `baseline: game`) and every
metric is reported per game as "<label>/<metric>" (with "<label>/share", the fraction of episodes,
and exact policy metrics such as an OpenSpiel component's exploitability). A component's label is
its `label`, else the game's own label (an OpenSpiel component: its OpenSpiel game name), else its
registry name; labels must differ.
"""

from __future__ import annotations

import random
from collections import defaultdict

from pydantic import Field

from langgame.config import ConfigError, GameConfig, Strict
from langgame.game import Episode, Game, Message, Payoff, StepView, Turn


class Component(Strict):
    name: str = Field(description="a registered game")
    options: dict = {}
    weight: float = Field(1.0, gt=0, description="relative probability of drawing this game")
    label: str | None = Field(None, description="name in metrics and episode.game (default: the game's own)")


class Options(Strict):
    games: list[Component] = Field(min_length=1)


class MixtureGame(Game):
    name = "mixture"
    payoff = Payoff.GENERAL_SUM  # each episode carries its game's own kind
    Options = Options

    def __init__(self, options: Options):
        from langgame.games import make_game

        self.games: dict[str, Game] = {}
        for i, c in enumerate(options.games):
            where = f"game.options.games[{i}]"
            if c.name == "mixture":
                raise ConfigError(f"{where}.name: a mixture cannot contain a mixture; list its games instead")
            game = make_game(GameConfig(name=c.name, options=c.options), where)
            label = c.label or getattr(game, "label", game.name)
            if label in self.games:
                raise ConfigError(f"{where}: label {label!r} is used twice; give each component its own label")
            self.games[label] = game
        self.weights = [c.weight for c in options.games]

    def of(self, episode: Episode) -> Game:
        return self.games[episode.game]

    def initial(self, rng: random.Random, split: str) -> Episode:
        label = rng.choices(list(self.games), self.weights)[0]
        episode = self.games[label].initial(rng, split)
        episode.game = label
        return episode

    def current_player(self, episode: Episode) -> int | None:
        return self.of(episode).current_player(episode)

    def observation(self, episode: Episode, player: int) -> list[Message] | StepView:
        return self.of(episode).observation(episode, player)

    def views(self, episode: Episode, player: int) -> list[list[Message] | StepView]:
        return self.of(episode).views(episode, player)

    def apply(self, episode: Episode, turn: Turn) -> None:
        self.of(episode).apply(episode, turn)

    def scripted_turn(self, episode: Episode, player: int) -> str:
        return self.of(episode).scripted_turn(episode, player)

    def _by_game(self, episodes: list[Episode]) -> dict[str, list[Episode]]:
        groups = defaultdict(list)
        for e in episodes:
            groups[e.game].append(e)
        return groups

    def judge(self, episodes: list[Episode]) -> None:
        for label, group in self._by_game(episodes).items():
            self.games[label].judge(group)

    def metrics(self, episodes: list[Episode]) -> dict[str, float]:
        out = {}
        for label, group in sorted(self._by_game(episodes).items()):
            returns = [e.returns() for e in group]
            out.update({f"{label}/share": len(group) / len(episodes),
                        **{f"{label}/reward_p{p}": sum(r[p - 1] for r in returns) / len(group) for p in (1, 2)},
                        **{f"{label}/{k}": v for k, v in self.games[label].metrics(group).items()}})
        return out

    def policy_metrics(self, policies: dict) -> dict[str, float]:
        return {f"{label}/{k}": v for label, game in self.games.items() for k, v in game.policy_metrics(policies).items()}

    def state_dict(self) -> dict:
        return {label: game.state_dict() for label, game in self.games.items()}

    def load_state_dict(self, state: dict) -> None:
        for label, game in self.games.items():
            game.load_state_dict(state.get(label, {}))
