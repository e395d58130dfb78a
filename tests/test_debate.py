"""debate: invented passages, turn order, the judge's log-odds as zero-sum rewards, naive judging."""

import json
import random

import pytest
import torch

from langgame.config import GameConfig, load_train_config
from langgame.game import Payoff, Turn
from langgame.games import make_game
from langgame.games.debate import scenario, split_of
from langgame.games.spiel import choice_logprobs
from langgame.metrics import read_metrics
from langgame.rl import train_rl


def game(**options):
    return make_game(GameConfig(name="debate", options={"judge_model": "tiny-random", **options}))


def test_scenarios_are_invented_facts_split_by_town():
    rng = random.Random(0)
    scenarios = [scenario(rng) for _ in range(200)]
    for s in scenarios:
        assert s["right"] in s["passage"] and s["wrong"] not in s["passage"]  # a wrong answer of the same kind
        assert s["town"] in s["question"]
    splits = {split_of(s["town"], 0.2) for s in scenarios}
    assert splits == {"train", "eval"}
    g = game()
    towns = {"train": set(), "eval": set()}
    for split in towns:
        for i in range(30):
            towns[split].add(g.initial(random.Random(i), split).meta["town"])
    assert not towns["train"] & towns["eval"]


def test_turn_order_follows_the_drawn_first_speaker_and_views_hide_nothing_they_should_not():
    g = game(rounds=2)
    e = next(e for e in (g.initial(random.Random(i), "train") for i in range(20)) if e.meta["first"] == 2)
    order = []
    while (p := g.current_player(e)) is not None:
        order.append(p)
        g.apply(e, Turn(p, f"argument {len(order)}"))
    assert order == [2, 1, 2, 1]
    chat = g.observation(e, 1)
    assert e.meta["passage"] in chat[0].turn.text and f"the answer is: {e.meta['answers'][0]}" in chat[0].turn.text
    assert [m.role for m in chat[1:]] == ["user", "assistant", "user", "assistant"]
    judge_view = g.judge_prompt(e)[1].turn.text
    assert e.meta["passage"] not in judge_view and "Debater B: argument 1" in judge_view
    c = game(format="consultancy", rounds=1)
    e = c.initial(random.Random(0), "train")
    assert c.current_player(e) == 1 and (c.apply(e, Turn(1, "trust me")) or c.current_player(e) is None)


def test_rewards_are_the_judges_log_odds_and_zero_sum():
    g = game()
    g.judge_policy  # noqa: B018 (load once)
    episodes = []
    for i in range(6):
        e = g.initial(random.Random(i), "train")
        while (p := g.current_player(e)) is not None:
            g.apply(e, Turn(p, f"My answer is right, says {p}."))
        episodes.append(e)
    g.judge(episodes)
    prompts = [g.judge_prompt(e) for e in episodes]
    with torch.no_grad():
        logp = choice_logprobs(g.judge_policy, prompts, [["A", "B"]] * 6)
    for e, lp in zip(episodes, logp):
        r1, r2 = e.returns()
        assert r1 == pytest.approx(float(lp[0] - lp[1]), abs=1e-5) and r1 + r2 == 0 and e.payoff is Payoff.ZERO_SUM
        assert e.meta["judge_logodds_right"] == pytest.approx(r1 if e.meta["right_seat"] == 1 else -r1)
    m = g.metrics(episodes)
    right = torch.tensor([e.meta["judge_logodds_right"] for e in episodes])
    assert m["judge_accuracy"] == pytest.approx(float((right > 0).float().mean()))
    assert m["judge_p_right"] == pytest.approx(float(torch.sigmoid(right).mean()), abs=1e-6)
    assert 0 <= m["naive_accuracy"] <= 1 and "naive_p_right" in m


def test_two_debaters_learn_against_each_other(tmp_path):
    cfg = {"stage": "rl", "seed": 0, "learners": [1, 2], "threads": 1,
           "game": {"name": "debate", "options": {"judge_model": "tiny-random@2"}},
           "player1": {"policy": {"model": "tiny-random"}, "sampling": {"max_new_tokens": 6}},
           "player2": {"policy": {"model": "tiny-random@1"}, "sampling": {"max_new_tokens": 6}},
           "algo": {"name": "reinforce", "group_size": 2}, "optim": {"lr": 1e-3},
           "scenarios_per_step": 2, "max_steps": 2, "eval_every": 2, "eval_scenarios": 4, "run_dir": str(tmp_path / "run")}
    (tmp_path / "debate.yaml").write_text(json.dumps(cfg))
    rows = read_metrics(train_rl(load_train_config(tmp_path / "debate.yaml")))
    train = [r for r in rows if "game/judge_accuracy" in r]
    assert len(train) == 2 and all(r["reward/p1"] == pytest.approx(-r["reward/p2"]) for r in train)
    assert all(r["train/tokens_player1"] > 0 and r["train/tokens_player2"] > 0 for r in train)
    assert [r["step"] for r in rows if "eval/naive_accuracy" in r] == [0, 2]
