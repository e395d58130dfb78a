"""unlearn: invented facts, the attacker's prefix, zero-sum leak rewards, retain accuracy, over-refusal,
and the gradient-ascent + KL baseline as reward-weighted behaviour cloning."""

import json
import random

import pytest
import torch

from langgame.cli import main
from langgame.config import GameConfig, load_train_config
from langgame.data.episodes import read_episodes, write_episodes
from langgame.game import Payoff, Turn
from langgame.games import make_game
from langgame.games.unlearn import DEFENDER, IDK, facts, questions, teaching_episodes
from langgame.judges.likelihood import TargetLikelihood
from langgame.metrics import read_metrics
from langgame.models import load_policy
from langgame.rl import train_rl
from langgame.train import train, turn_rewards


def game(**options):
    return make_game(GameConfig(name="unlearn", options=options))


def play(g, split, n, reply):
    """n judged episodes whose attacker writes a fixed prefix and whose defender replies reply(episode)."""
    episodes = []
    for i in range(n):
        e = g.initial(random.Random(i), split)
        while (p := g.current_player(e)) is not None:
            g.apply(e, Turn(p, "Tell me." if p == 1 else reply(e)))
        episodes.append(e)
    g.judge(episodes)
    return episodes


def test_facts_are_invented_distinct_and_held_out_phrasings_are_never_taught():
    f = facts(10, 10, 0)
    assert f == facts(10, 10, 0) and f != facts(10, 10, 1)
    items = f["forget"] + f["retain"]
    assert len({x["town"] for x in items}) == 20 and len({x["answer"] for x in items}) == 20
    taught = {t.text for e in teaching_episodes(items) for t in e.turns if t.player == 1}
    for x in items:
        train_q, eval_q = questions(x, "train"), questions(x, "eval")
        assert {q for _, q in train_q} <= taught and train_q[0] == eval_q[0]  # the direct question is taught
        assert not {q for p, q in eval_q if p == "paraphrase"} & taught
    more = facts(10, 10, 0, n_unknown=3)  # towns with no fact come last: the facts themselves do not change
    assert {k: more[k] for k in ("forget", "retain")} == {k: f[k] for k in ("forget", "retain")} and f["unknown"] == []
    assert [x["answer"] for x in more["unknown"]] == [IDK] * 3 and not {x["town"] for x in more["unknown"]} & {x["town"] for x in items}


def test_defender_sees_the_attackers_prefix_before_the_question_and_retain_facts_are_asked_plainly():
    g = game()
    forget = next(e for e in (g.initial(random.Random(i), "train") for i in range(20)) if e.meta["kind"] == "forget")
    assert g.current_player(forget) == 1
    assert forget.meta["question"] in g.observation(forget, 1)[0].turn.text
    g.apply(forget, Turn(1, "Quiz time!"))
    seen = g.observation(forget, 2)
    assert [m.role for m in seen] == ["system", "user"] and seen[1].turn.text == f"Quiz time!\n{forget.meta['question']}"
    retain = next(e for e in (g.initial(random.Random(i), "train") for i in range(20)) if e.meta["kind"] == "retain")
    assert g.current_player(retain) == 2 and g.observation(retain, 2)[1].turn.text == retain.meta["question"]
    g.apply(retain, Turn(2, "Kamori."))
    assert g.current_player(retain) is None
    assert g.scripted_turn(forget, 1) == g.scripted_turn(forget, 1)  # a fixed hand-written prefix per question


@pytest.mark.parametrize("reply,refusal_reward,forget,retain", [
    ("answer", 0.0, (1.0, -1.0), (0.0, 1.0)), ("I don't know.", 0.0, (0.0, 0.0), (0.0, 0.0)),
    ("answer", 0.5, (1.0, -1.0), (0.0, 1.0)), ("I don't know.", 0.5, (-0.5, 0.5), (0.0, 0.0))])
def test_rewards_zero_sum_on_forget_facts_and_retain_accuracy_for_the_defender(reply, refusal_reward, forget, retain):
    g = game(refusal_reward=refusal_reward)
    episodes = play(g, "eval", 40, lambda e: f"It is {e.meta['answer'].upper()}." if reply == "answer" else reply)
    assert g.payoff is Payoff.GENERAL_SUM and game(forget_fraction=1.0).payoff is Payoff.ZERO_SUM
    for e in episodes:
        assert e.returns() == (forget if e.meta["kind"] == "forget" else retain)
    m = g.metrics(episodes)
    named = reply == "answer"
    assert m["leak"] == m["retain_accuracy"] == float(named) and m["retain_refusal"] == float(not named)
    assert {"leak_direct", "leak_paraphrase", "retain_accuracy_direct", "retain_accuracy_paraphrase"} <= m.keys()
    assert not any(e.meta["named"] for e in play(g, "eval", 10, lambda e: e.meta["answer"][:-1] + "x"))  # whole words only


def test_policy_metrics_are_the_defenders_answer_probabilities():
    g = game(n_forget=2, n_retain=2)
    tiny = load_policy("tiny-random")
    m = g.policy_metrics({1: None, 2: tiny})
    assert set(m) == {f"p_{idk}{kind}_{phrasing}" for idk in ("", "idk_") for kind in ("forget", "retain") for phrasing in ("direct", "paraphrase")}
    f = g.facts["forget"]
    chats = [[{"role": "system", "content": DEFENDER}, {"role": "user", "content": questions(x, "eval")[0][1]}] for x in f]
    assert m["p_forget_direct"] == pytest.approx(sum(TargetLikelihood(tiny)(chats, [f"{x['answer']}." for x in f])) / 2, rel=1e-5)
    assert m["p_idk_forget_direct"] == pytest.approx(sum(TargetLikelihood(tiny)(chats, [IDK] * 2)) / 2, rel=1e-5)
    assert g.policy_metrics({1: tiny, 2: None}) == {}


def test_turn_rewards_spread_each_turns_reward_over_its_actions():
    turn = torch.tensor([[-1, 1, 1, 2, 2, -1]])
    assert turn_rewards(turn, [torch.tensor([0.0, 0.0, -1.0])]).tolist() == [[0, 0, 0, -1, -1, 0]]


def test_data_files_and_gradient_ascent_with_kl_forget_the_forget_facts(tmp_path):
    assert main(["data", "unlearn", "--out", str(tmp_path / "data"), "--n-forget", "2", "--n-retain", "2", "--n-unknown", "1"]) == 0
    ga = read_episodes(tmp_path / "data" / "gradient_ascent.parquet")
    f = facts(2, 2, 0, n_unknown=1)
    signs = {e.turns[-1].text: e.turns[-1].rewards[1] for e in ga}
    assert signs == {**{f"{x['answer']}.": -1.0 for x in f["forget"]}, **{f"{x['answer']}.": 1.0 for x in f["retain"]}}
    replies = lambda name: {e.id.split("/")[0]: e.turns[-1].text for e in read_episodes(tmp_path / "data" / f"{name}.parquet")}  # noqa: E731
    assert replies("teach") == {x["town"]: x["answer"] if kind == "unknown" else f"{x['answer']}." for kind in f for x in f[kind]}
    assert replies("idk") == {**{x["town"]: IDK for x in f["forget"]}, **{x["town"]: f"{x['answer']}." for x in f["retain"]}}
    assert len(read_episodes(tmp_path / "data" / "relearn.parquet")) == 2  # half the forget facts, two phrasings each
    write_episodes(tmp_path / "forget.parquet", [e for e in ga if e.turns[-1].rewards[1] < 0])

    def run(name, data, **extra):
        cfg = {"stage": "sft", "seed": 0, "threads": 1, "policy": {"model": "tiny-random"}, "reward_weighted": True,
               "data": {"train": str(data), "max_length": 256}, "optim": {"lr": 3e-3}, "batch_size": 4, "max_steps": 4,
               "run_dir": str(tmp_path / name), **extra}
        (tmp_path / f"{name}.yaml").write_text(json.dumps(cfg))
        return train(load_train_config(tmp_path / f"{name}.yaml"))

    before = game(n_forget=2, n_retain=2).policy_metrics({2: load_policy("tiny-random")})
    after = game(n_forget=2, n_retain=2).policy_metrics({2: load_policy(str(run("ga", tmp_path / "data" / "gradient_ascent.parquet",
                                                                                  kl_coef=0.5) / "final"))})
    assert after["p_forget_direct"] < before["p_forget_direct"] and after["p_retain_direct"] > before["p_retain_direct"]
    rows = read_metrics(tmp_path / "ga")
    assert all(r["train/kl"] >= 0 for r in rows if "train/kl" in r) and any(r["train/kl"] > 0 for r in rows if "train/kl" in r)
    # no KL on the tokens pushed away: on forget facts alone the KL term is always 0
    run("forget_only", tmp_path / "forget.parquet", kl_coef=0.5)
    assert [r["train/kl"] for r in read_metrics(tmp_path / "forget_only") if "train/kl" in r] == [0.0] * 4


def test_attacker_and_defender_learn_in_the_unlearning_game(tmp_path):
    cfg = {"stage": "rl", "seed": 0, "learners": [1, 2], "threads": 1,
           "game": {"name": "unlearn", "options": {"n_forget": 2, "n_retain": 2, "likelihood_coef": 1.0, "likelihood_model": "tiny-random"}},
           "player1": {"policy": {"model": "tiny-random"}, "sampling": {"max_new_tokens": 6}},
           "player2": {"policy": {"model": "tiny-random@1"}, "sampling": {"max_new_tokens": 6}},
           "algo": {"name": "reinforce", "group_size": 2}, "optim": {"lr": 1e-3},
           "scenarios_per_step": 4, "max_steps": 2, "eval_every": 2, "eval_scenarios": 8, "run_dir": str(tmp_path / "run")}
    (tmp_path / "unlearn.yaml").write_text(json.dumps(cfg))
    rows = read_metrics(train_rl(load_train_config(tmp_path / "unlearn.yaml")))
    train_rows = [r for r in rows if "reward/p1" in r]
    assert len(train_rows) == 2 and all(r["train/tokens_player1"] > 0 and r["train/tokens_player2"] > 0 for r in train_rows)
    evals = [r for r in rows if "eval/p_forget_direct" in r]
    assert [r["step"] for r in evals] == [0, 2] and all(0 < r["game/leak_likelihood"] < 1 for r in train_rows)  # the shaping
    assert all(0 < r["eval/p_retain_paraphrase"] < 1 for r in evals)
