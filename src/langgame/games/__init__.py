"""Games, one file each. A game registers here by name; its options are validated by its `Options` model."""

from __future__ import annotations

import importlib

from langgame.config import ConfigError, GameConfig, validate
from langgame.game import Game

GAMES = {
    "secret": "langgame.games.secret:SecretGame",
    "qa": "langgame.games.qa:QAGame",
    "redteam": "langgame.games.redteam:RedTeamGame",
    "babyai": "langgame.games.babyai:BabyAIGame",
    "openspiel": "langgame.games.openspiel:OpenSpielGame",
    "mixture": "langgame.games.mixture:MixtureGame",
    "propose_solve": "langgame.games.propose_solve:ProposeSolveGame",
    "debate": "langgame.games.debate:DebateGame",
    "unlearn": "langgame.games.unlearn:UnlearnGame",
}


def make_game(cfg: GameConfig, where: str = "game") -> Game:
    """Instantiate a registered game; an unknown name or option is a one-line error."""
    if cfg.name not in GAMES:
        raise ConfigError(f"{where}.name: unknown game {cfg.name!r}; available: {', '.join(sorted(GAMES))}")
    module, cls = GAMES[cfg.name].split(":")
    game_cls = getattr(importlib.import_module(module), cls)
    return game_cls(validate(game_cls.Options, cfg.options, f"{where}.options"))
