"""propose_solve: task parsing, the proposer's three rewards, and one experience row per solver attempt."""

import json
import random

import pytest
import torch

from conftest import final_weights, kill_and_resume
from langgame.config import GameConfig, load_train_config
from langgame.data.episodes import read_episodes
from langgame.game import Payoff, Turn
from langgame.games import make_game
from langgame.games.propose_solve import answer_of, evaluate, random_task
from langgame.metrics import read_metrics
from langgame.rl import experience, train_rl


def game(**options):
    return make_game(GameConfig(name="propose_solve", options={"attempts": 4, **options}))


def played(g, proposal: str, replies: list[str], tokenizer=None) -> "Episode":  # noqa: F821
    """An episode with the given proposal and solver replies (as sampled turns when a tokenizer is given)."""
    e = g.initial(random.Random(0), "train")

    def turn(player, text):
        if tokenizer is None:
            return Turn(player, text)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
        return Turn(player, text, tokens=tuple(ids), logprobs=tuple(-0.1 * (i + 1) for i in range(len(ids))))

    g.apply(e, turn(1, proposal))
    for r in replies:
        assert g.current_player(e) == 2
        g.apply(e, turn(2, r))
    return e


def test_tasks_are_computed_by_the_game_within_limits():
    assert evaluate("Sure: (12 - 5) * 3 = 20", 4, 2) == ("(12 - 5) * 3", 21, 2)  # the proposer's claimed answer is ignored
    assert evaluate("-5 * -3", 4, 2) == ("-5 * -3", 15, 1)
    assert evaluate("1. (2 + 30) * 4 and 2. Add: 4 - 3 = 1", 4, 1) == ("4 - 3", 1, 1)  # the first valid one
    for bad in ("2 ** 99", "100 + 1", "1+2+3+4+5+6", "no task", "(" * 500 + "1" + ")" * 500, "3 / 4", "42", "((7))"):
        assert evaluate(bad, 4, 2) is None or evaluate(bad, 4, 2)[0] != bad, bad
    rng = random.Random(0)
    for ops in range(1, 5):
        task = random_task(rng, ops, 2)
        assert evaluate(task, 4, 2)[2] == ops and evaluate(task, 4, 2)[0] == task
    assert answer_of("So it is 1,234.") == 1234 and answer_of("-7") == -7 and answer_of("none") is None


@pytest.mark.parametrize("mode,rewards", [
    # solver right 1 of 4 times: acc 0.25
    ("identical", [0.25, 0.25]),
    ("learnability", [0.75, 0.25]),
    ("edge", [0.25 - 1 / 2, 0.25]),  # the batch's 2 other tasks: one equals it
])
def test_proposer_rewards_and_the_solvers_accuracy(mode, rewards):
    g = game(proposer_reward=mode)
    e = played(g, "(2 + 3) * 4", ["20", "It is 21", "19", "?"])
    same, other = played(g, "(2 + 3) * 4", ["20"] * 4), played(g, "7 - 1", ["6"] * 4)
    g.judge([e, same, other])
    assert g.current_player(e) is None and e.meta["value"] == 20 and e.meta["task"] == "(2 + 3) * 4"
    assert list(e.returns()) == pytest.approx(rewards)
    assert [t.rewards[1] for t in e.turns] == [0.0, 0.25, 0.0, 0.0, 0.0]  # each attempt pays the solver on its own turn
    assert e.payoff is (Payoff.IDENTICAL_INTEREST if mode == "identical" else Payoff.GENERAL_SUM)
    e.check_payoff()
    learnability_when_always_right = game(proposer_reward="learnability")
    f = played(learnability_when_always_right, "7 - 1", ["6"] * 4)
    learnability_when_always_right.judge([f])
    assert f.returns()[0] == 0.0


def test_the_proposer_sees_one_example_exchange_then_the_requested_operation_count():
    g = game()
    e = g.initial(random.Random(3), "train")
    chat = g.observation(e, 1)
    assert [m.role for m in chat] == ["system", "user", "assistant", "user"]
    assert evaluate(chat[2].turn.text, 4, 1) is not None  # the example reply is itself a valid task
    assert chat[3].turn.text == f"Operations: {e.meta['requested_ops']}"


def test_an_invalid_task_ends_the_episode_with_the_defined_reward():
    for mode, r2 in (("identical", -1.0), ("learnability", 0.0)):
        g = game(proposer_reward=mode)
        e = played(g, "I cannot think of one", [])
        assert g.current_player(e) is None
        g.judge([e])
        assert e.returns() == (-1.0, r2) and g.metrics([e]) == {"invalid": 1.0}


def test_eval_tasks_are_drawn_by_chance_and_binned_by_operations():
    g = game(max_ops=3)
    tasks = [g.initial(random.Random(repr(("eval", i))), "eval") for i in range(60)]
    assert all(g.current_player(e) == 2 and e.turns[0].tokens is None for e in tasks)  # chance wrote player 1's turn
    for e in tasks:
        for _ in range(4):
            g.apply(e, Turn(2, str(e.meta["value"]) if e.meta["ops"] == 1 else "0"))
    g.judge(tasks)
    m = g.metrics(tasks)
    assert m["acc_ops1"] == 1.0 and m["acc_ops3"] < 0.1 and m["trivial"] == pytest.approx(sum(e.meta["ops"] == 1 for e in tasks) / 60)


def test_each_solver_attempt_is_one_experience_row_with_its_own_reward(tiny):
    g = game()
    tok = tiny.tokenizer
    e = played(g, "(2 + 3) * 4", ["20", "21", "20", "x"], tok)
    g.judge([e])
    exp = experience(g, [e], tiny, 2, [7])
    assert exp.returns.tolist() == [0.25, 0.0, 0.25, 0.0] and exp.groups.tolist() == [7] * 4
    assert exp.rewards.sum(-1).tolist() == [0.25, 0.0, 0.25, 0.0]
    for row, k in enumerate(range(1, 5)):  # the row holds attempt k only: its tokens and the engine's log-probs
        assert int(exp.mask[row].sum()) == len(e.turns[k].tokens)
        assert exp.behaviour_logp[row][exp.mask[row] > 0].tolist() == pytest.approx(list(e.turns[k].logprobs))
        assert set(exp.batch.turn[row][exp.mask[row] > 0].tolist()) == {k}
    proposer = experience(g, [e], tiny, 1, [7])
    assert proposer.returns.tolist() == [0.5] and proposer.rewards.sum().item() == pytest.approx(0.5)  # identical: acc
    assert set(proposer.batch.turn[0][proposer.mask[0] > 0].tolist()) == {0}


def test_proposer_and_solver_learn_together_and_resume_bit_exactly(tmp_path):
    def config(run, **changes):
        cfg = {"stage": "rl", "seed": 0, "learners": [1, 2], "threads": 1,
               "game": {"name": "propose_solve", "options": {"attempts": 2, "proposer_reward": "learnability"}},
               "player1": {"policy": {"model": "tiny-random"}, "sampling": {"max_new_tokens": 6}},
               "player2": {"policy": {"model": "tiny-random@1"}, "sampling": {"max_new_tokens": 4}},
               "algo": {"name": "reinforce", "group_size": 1, "baseline": "batch"}, "optim": {"lr": 1e-3},
               "scenarios_per_step": 4, "max_steps": 3, "eval_every": 3, "eval_scenarios": 6, "save_every": 1,
               "save_train_episodes_every": 2, "run_dir": str(tmp_path / run)}
        cfg["player2"]["algo"] = {"name": "reinforce", "group_size": 1, "baseline": "group"}  # attempts at one task
        cfg.update(changes)
        (tmp_path / f"{run}.yaml").write_text(json.dumps(cfg))
        return load_train_config(tmp_path / f"{run}.yaml")

    whole = train_rl(config("whole"))
    rows = read_metrics(whole)
    assert [r["step"] for r in rows if "eval/invalid" in r] == [0, 3]
    assert all(r["eval/invalid"] == 0.0 for r in rows if "eval/invalid" in r)  # eval tasks are chance's
    train = [r for r in rows if "game/invalid" in r]
    assert len(train) == 3 and all((r.get("train/tokens_player2", 0) > 0) == (r["game/invalid"] < 1) for r in train)  # solver rows on valid tasks only
    assert all(r["train/tokens_player1"] > 0 for r in train)
    assert sorted(p.name for p in (whole / "episodes").glob("train_*")) == ["train_step0000002.parquet"]
    proposals = read_episodes(whole / "episodes" / "train_step0000002.parquet")
    assert len(proposals) == 4 and all(e.turns[0].player == 1 and e.turns[0].tokens for e in proposals)  # what the proposer wrote
    uniform = read_metrics(train_rl(config("uniform", learners=[2], player1={"policy": None})))  # random tasks: all valid
    assert all(r["game/invalid"] == 0 and r["train/tokens_player2"] > 0 for r in uniform if "game/invalid" in r)
    kill_and_resume(config("killed"), at=2)
    for seat in ("player1", "player2"):
        a, b = final_weights(whole, seat), final_weights(tmp_path / "killed", seat)
        assert a.keys() == b.keys() and len(a) and all(torch.equal(a[k], b[k]) for k in a)
