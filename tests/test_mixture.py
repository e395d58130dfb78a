"""OpenSpiel games played by sampled text turns (games/openspiel.py) and mixtures of games (games/mixture.py)."""

import json
import random

import numpy as np
import pytest
import torch

from conftest import final_weights, kill_and_resume
from langgame.algos.base import Experience
from langgame.algos.reinforce import Reinforce
from langgame.config import AlgoConfig, ConfigError, GameConfig, load_train_config
from langgame.game import Payoff, Turn
from langgame.games import make_game
from langgame.games.openspiel import parse
from langgame.games.spiel import choice_logprobs
from langgame.metrics import read_metrics
from langgame.rl import train_rl

KUHN = {"name": "openspiel", "options": {"game": "kuhn_poker"}}


def kuhn():
    return make_game(GameConfig(**KUHN))


def test_reply_parsing_takes_the_first_word_in_any_case():
    words = {0: "pass", 1: "bet"}
    assert [parse(r, words) for r in ("bet", "  BET.", "Pass, you can", "passive", "I bet", "")] == [1, 1, 0, None, None, None]


def test_kuhn_rewards_are_openspiel_returns_on_the_last_turn_and_illegal_replies_fall_back():
    game, rng = kuhn(), random.Random(0)
    for _ in range(20):
        e = game.initial(rng, "train")
        cards = e.meta["history"][:2]  # the deal: player 1's card, then player 2's
        assert game.current_player(e) == 1 and e.payoff is Payoff.ZERO_SUM
        game.apply(e, Turn(1, "Bet!"))
        assert game.current_player(e) == 2
        game.apply(e, Turn(2, "I would call"))  # not an action word: the fallback, fold
        assert game.current_player(e) is None and e.meta["history"][2:] == [1, 0]
        game.judge([e])
        assert [t.rewards for t in e.turns] == [(0.0, 0.0), (1.0, -1.0)]  # player 2 folded: it loses its ante
        assert e.meta["illegal"] == [0, 1] and e.meta["shaping"] == {"2": -1.0}
        e.check_payoff()
        e = game.initial(random.Random(repr(cards)), "train")
        for player, reply in ((1, "bet"), (2, "call")):
            game.apply(e, Turn(player, reply))
        game.judge([e])
        c1, c2 = e.meta["history"][:2]
        assert e.returns() == ((2.0, -2.0) if c1 > c2 else (-2.0, 2.0)) and e.meta["shaping"] == {}
    assert game.metrics([e]) == {"illegal_p1": 0.0, "illegal_p2": 0.0}


def test_a_player_sees_its_own_card_its_past_replies_and_the_public_actions_only():
    game = kuhn()
    e = game.initial(random.Random(3), "train")
    c1, c2 = e.meta["history"][:2]
    names = ("Jack", "Queen", "King")
    game.apply(e, Turn(1, "pass"))
    examples = ["user", "assistant"] * 2  # the reply format on actions of no game: context, owned by no player
    chat2 = game.observation(e, 2)
    assert [m.role for m in chat2] == ["system", *examples, "user"] and all(m.turn.player == 0 for m in chat2)
    assert f"Your card: {names[c2]}" in chat2[-1].turn.text and "player 1 passed" in chat2[-1].turn.text
    assert chat2[-1].turn.text.endswith("Reply with one word.")
    game.apply(e, Turn(2, "bet"))
    chat1 = game.observation(e, 1)
    assert [m.role for m in chat1] == ["system", *examples, "user", "assistant", "user"]
    assert chat1[-2].turn is e.turns[0] and chat1[-2].index == 0  # its own sampled turn, as recorded
    assert f"Your card: {names[c1]}" in chat1[-1].turn.text and "Legal actions: fold, call" in chat1[-1].turn.text
    if c1 != c2:
        assert all(f"Your card: {names[c2]}" not in m.turn.text for m in chat1)


def test_policy_metrics_are_the_exploitability_of_the_legal_reply_policy(tiny):
    game = kuhn()
    assert game.policy_metrics({1: None, 2: None})["exploitability"] == pytest.approx(11 / 24, abs=1e-9)  # uniform play
    rps = make_game(GameConfig(name="openspiel", options={"game": "matrix_rps"}))
    out = rps.policy_metrics({1: tiny, 2: None})
    # closed form: player 1 plays x, player 2 uniform; NashConv = max_b (-x^T A)_b - 0 + max_a (A u)_a - 0
    e = rps.initial(random.Random(0), "eval")
    words = ["rock", "paper", "scissors"]
    logp = choice_logprobs(tiny, [rps.observation(e, 1)], [[v for w in words for v in (w, w.capitalize())]], eot=False)
    x = logp[0].detach().view(3, 2).logsumexp(-1).softmax(-1).double().numpy()
    A = np.array([[0, -1, 1], [1, 0, -1], [-1, 1, 0]])
    assert out["nash_conv"] == pytest.approx(max(-(x @ A)), abs=1e-6)
    assert out["exploitability"] == pytest.approx(max(-(x @ A)) / 2, abs=1e-6)
    # as played: the mass of replies that start with no legal word goes to the fallback, rock
    raw = choice_logprobs(tiny, [rps.observation(e, 1)], [[v for w in words for v in (w, w.capitalize())]], eot=False, normalise=False)
    m = raw[0].detach().view(3, 2).logsumexp(-1).exp().double().numpy()
    assert out["legal_p1"] == pytest.approx(m.sum(), rel=1e-5) and m.sum() < 0.05  # a random byte-level model
    played = m + np.array([1.0 - m.sum(), 0, 0])
    assert out["exploitability_played"] == pytest.approx(max(-(played @ A)) / 2, abs=1e-6)


def test_mixture_draws_games_by_weight_and_reports_each():
    game = make_game(GameConfig(name="mixture", options={"games": [{**KUHN, "weight": 3}, {"name": "openspiel", "options": {"game": "matrix_rps"}, "weight": 1}]}))
    rng = random.Random(0)
    episodes = [game.initial(rng, "train") for _ in range(2000)]
    share = np.mean([e.game == "kuhn_poker" for e in episodes])
    assert abs(share - 0.75) < 0.03 and {e.game for e in episodes} == {"kuhn_poker", "matrix_rps"}
    for e in episodes[:50]:
        while (p := game.current_player(e)) is not None:
            game.apply(e, Turn(p, game.scripted_turn(e, p)))
    game.judge(episodes[:50])
    metrics = game.metrics(episodes[:50])
    kuhns = [e for e in episodes[:50] if e.game == "kuhn_poker"]
    assert metrics["kuhn_poker/share"] == len(kuhns) / 50
    assert metrics["kuhn_poker/reward_p1"] == pytest.approx(np.mean([e.returns()[0] for e in kuhns]))
    assert set(game.policy_metrics({1: None, 2: None})) == {f"{g}/{k}{m}" for g in ("kuhn_poker", "matrix_rps")
                                                            for k in ("exploitability", "nash_conv") for m in ("", "_played")}


def test_a_mixture_keeps_each_games_learning_rows(tiny):
    from langgame.rl import experience

    game = make_game(GameConfig(name="mixture", options={"games": [KUHN, {"name": "propose_solve", "options": {"attempts": 3}}]}))
    rng, episodes = random.Random(0), []
    while len({e.game for e in episodes}) < 2 or len(episodes) < 4:
        episodes.append(game.initial(rng, "train"))
    eot = tiny.tokenizer.convert_tokens_to_ids("<|im_end|>")
    for e in episodes:
        while (p := game.current_player(e)) is not None:
            text = "7 - 1" if e.game == "propose_solve" and p == 1 else "6" if e.game == "propose_solve" else "bet"
            ids = tuple(tiny.tokenizer(text, add_special_tokens=False)["input_ids"]) + (eot,)
            game.apply(e, Turn(p, text, tokens=ids, logprobs=(0.0,) * len(ids)))
    game.judge(episodes)
    exp = experience(game, episodes, tiny, 2, list(range(len(episodes))))
    solver_rows = 3 * sum(e.game == "propose_solve" for e in episodes)
    assert len(exp.returns) == solver_rows + sum(e.game == "kuhn_poker" for e in episodes)  # one row per attempt
    assert sorted(exp.returns.tolist())[-solver_rows:] == [pytest.approx(1 / 3)] * solver_rows


@pytest.mark.parametrize("games,error", [
    ([{"name": "chess"}], "game.options.games[0].name: unknown game 'chess'; available: babyai, debate, mixture, openspiel, propose_solve, qa, redteam, secret, unlearn"),
    ([{**KUHN, "weight": 0}], "game.options: games.0.weight: Input should be greater than 0, got 0"),
    ([KUHN, KUHN], "game.options.games[1]: label 'kuhn_poker' is used twice; give each component its own label"),
    ([{"name": "mixture"}], "game.options.games[0].name: a mixture cannot contain a mixture; list its games instead"),
    ([], "game.options: games: List should have at least 1 item after validation, not 0, got []"),
])
def test_mixture_config_errors_are_one_line(games, error):
    with pytest.raises(ConfigError) as info:
        make_game(GameConfig(name="mixture", options={"games": games}))
    assert str(info.value) == error


def test_reinforce_baselines_per_group_game_or_batch():
    returns = torch.tensor([1.0, 3.0, 5.0, 7.0, 9.0])
    exp = lambda: Experience(None, torch.ones(5, 1), torch.zeros(5, 1), returns, groups=torch.tensor([0, 0, 1, 1, 2]),  # noqa: E731
                             games=torch.tensor([10, 10, 10, 20, 20]), roles=torch.tensor([2, 2, 2, 2, 1]))
    baselines = {}
    for kind in ("group", "game", "batch"):
        x = exp()
        Reinforce(AlgoConfig(baseline=kind)).advantages(x)
        baselines[kind] = x.advantages[:, 0].tolist()
    # advantage = reward-to-go (0 here) - baseline: the mean of the others of the same key and role;
    # role 1's only sample has no baseline
    assert baselines["group"] == [-3.0, -1.0, -7.0, -5.0, 0.0]
    assert baselines["game"] == [-4.0, -3.0, -2.0, 0.0, 0.0]
    assert baselines["batch"] == pytest.approx([-5.0, -13 / 3, -11 / 3, -3.0, 0.0])


def test_a_shared_policy_learns_a_mixture_and_resumes_bit_exactly(tmp_path):
    def config(run):
        cfg = {"stage": "rl", "seed": 0, "learners": [1, 2], "sharing": "shared", "threads": 1,
               "game": {"name": "mixture", "options": {"games": [{"name": "openspiel", "options": {"game": g, "text": "compact"}}
                                                               for g in ("kuhn_poker", "matrix_rps")]}},
               "player1": {"policy": {"model": "tiny-random"}, "sampling": {"max_new_tokens": 3}},
               "player2": {"policy": {"model": "tiny-random"}, "sampling": {"max_new_tokens": 3}},
               "algo": {"name": "reinforce", "group_size": 1, "baseline": "game"}, "optim": {"lr": 1e-3},
               "scenarios_per_step": 4, "max_steps": 3, "eval_every": 3, "eval_scenarios": 4, "save_every": 1,
               "run_dir": str(tmp_path / run)}
        (tmp_path / f"{run}.yaml").write_text(json.dumps(cfg))
        return load_train_config(tmp_path / f"{run}.yaml")

    whole = train_rl(config("whole"))
    evals = [r for r in read_metrics(whole) if "eval/kuhn_poker/exploitability" in r]
    assert [r["step"] for r in evals] == [0, 3] and all(0 < r["eval/matrix_rps/exploitability"] <= 1 for r in evals)
    assert all(r["eval/kuhn_poker/illegal_p1"] == 1.0 for r in evals)  # a random model never writes an action word
    kill_and_resume(config("killed"), at=2)
    a, b = final_weights(whole), final_weights(tmp_path / "killed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
