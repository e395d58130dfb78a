"""The BabyAI teacher/student game (games/babyai.py) and network players (nets.py) on tiny models."""

import json
import random

import numpy as np
import pytest
import torch

from conftest import final_weights, kill_and_resume
from langgame.algos import PPO
from langgame.algos.ppo import ValueHead
from langgame.config import AlgoConfig, ConfigError, GameConfig, OptimConfig, PolicyConfig, RLConfig, TrainConfig, load_yaml, validate
from langgame.game import Turn, learner_rewards
from langgame.games import make_game
from langgame.games.babyai import ACTIONS, BabyAIGame, describe, parse_hint
from langgame.learner import Learner
from langgame.models import ModelError, load_policy
from langgame.rl import experience, train_rl

GAME = BabyAIGame.Options(level="BabyAI-GoToRedBallNoDists-v0", hint_every=2)


def student():
    torch.manual_seed(0)
    return load_policy(PolicyConfig(model="babyai-net", device="cpu"))


def bot_episode(game, hint_texts):
    """One episode (8 bot steps) in which the student follows BabyAIBot; the teacher's replies are `hint_texts` in turn."""
    e = game.initial(random.Random(2), "train")
    replies = iter(hint_texts)
    while (p := game.current_player(e)) is not None:
        if p == 1:
            game.apply(e, Turn(1, next(replies)))
        else:
            a = game.bot_action(e.state)
            game.apply(e, Turn(2, ACTIONS[a], tokens=(a,), logprobs=(-1.0,)))
    game.judge([e])
    return e


def test_unknown_level_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown BabyAI level 'BabyAI-Nope-v0'; valid levels: .*BabyAI-GoToLocal-v0"):
        make_game(GameConfig(name="babyai", options={"level": "BabyAI-Nope-v0"}))


def test_hints_parse_to_the_first_action_word_or_to_none():
    assert parse_hint("Turn LEFT, then right") == 0
    assert parse_hint("right, not left") == 1
    assert parse_hint("Go straight ahead.") == 2
    assert parse_hint("pick up the ball") == 3
    assert parse_hint("open the door") == 5
    assert parse_hint("The little coparader is the coc") is None
    assert parse_hint("leftover") is None  # whole words only


def test_the_teacher_reads_what_the_student_sees():
    game = BabyAIGame(GAME)
    e = game.initial(random.Random(0), "train")
    text = describe(e.state.obs)
    assert text.startswith("Go to the red ball.") and "red ball (" in text and "ahead" in text
    chat = game.observation(e, 1)
    assert [m.role for m in chat] == ["system", "user"] and chat[-1].turn.text == text and chat[-1].turn.player == 0


def test_rewards_are_identical_and_each_hint_is_credited_with_the_return_after_it(tiny):
    game = BabyAIGame(GAME)
    e = bot_episode(game, ["forward please", "blah", "left", "done", "right", "forward", "left", "right"])
    r1, r2 = e.returns()
    assert e.meta["success"] and r1 == r2 > 0.5
    paid = [k for k, t in enumerate(e.turns) if t.rewards != (0.0, 0.0)]
    assert len(paid) == 1 and e.turns[paid[0]].player == 2  # the student's last action earns it, for both
    hints = [k for k, t in enumerate(e.turns) if t.player == 1]
    assert len(hints) >= 2 and e.meta["hints"][:2] == [2, None]

    teacher = tiny.encode(game.observation(e, 1))
    got = learner_rewards(e, teacher, 1)
    latest = max(k for k in hints if k < paid[0])
    assert got.sum() == pytest.approx(r1) and got[np.flatnonzero(teacher.turn == latest)[-1]] == pytest.approx(r1)

    net = student()
    view = game.observation(e, 2)
    rendered = net.encode(view)
    got = learner_rewards(e, rendered, 2)
    assert got[-1] == pytest.approx(r2) and got.sum() == pytest.approx(r2)  # on the student's last action
    assert list(rendered.ids[1:]) == [t.tokens[0] for t in e.turns if t.player == 2]


def test_fallbacks_are_counted_and_the_oracle_agrees_with_the_bot():
    game = BabyAIGame(GAME)
    e = bot_episode(game, ["???"] * 50)
    m = game.metrics([e])
    assert m["hint_fallback"] == 1.0 and m["hint_agreement"] == 0.0 and m["success"] == 1.0
    e = game.initial(random.Random(1), "eval")
    while (p := game.current_player(e)) is not None:
        text = game.scripted_turn(e, 1) if p == 1 else ACTIONS[game.bot_action(e.state)]
        game.apply(e, Turn(p, text))
    game.judge([e])
    m = game.metrics([e])
    assert m["hint_agreement"] == 1.0 and m["hint_fallback"] == 0.0 and e.meta["seed"] % 2 == 1


def test_student_forward_matches_its_network_row_by_row_and_guides_only_where_a_hint_was_just_given():
    game = BabyAIGame(GAME)
    e = bot_episode(game, ["forward", "left", "right", "left", "right", "forward", "left", "right"])
    net = student()
    exp = experience(game, [e, e], net, 2, [0, 0])
    assert exp.batch.inputs["image"].shape[:2] == exp.mask.shape and exp.mask.sum() == 2 * e.state.steps
    fwd = net.forward(exp.batch, exp.mask > 0, entropy=True, hidden=True, guide=True)
    logits, _ = net.model({k: v[0] for k, v in exp.batch.inputs.items()})
    want = torch.log_softmax(logits, -1).gather(-1, exp.batch.ids[0, 1:, None]).squeeze(-1) * exp.mask[0]
    assert torch.allclose(fwd.logp[0], want, atol=1e-6)
    assert fwd.hidden.shape == (*exp.mask.shape, 128) and (fwd.entropy[exp.mask > 0] > 0).all()
    hint, age = exp.batch.inputs["hint"][0], exp.batch.inputs["hint_age"][0]
    given = (hint > 0) & (age == 0) & (exp.mask[0] > 0)
    assert given.sum() >= 1 and (fwd.guide[0][~given] == 0).all()
    suggested = torch.log_softmax(logits, -1).gather(-1, (hint - 1).clamp(min=0)[:, None]).squeeze(-1)
    assert torch.allclose(fwd.guide[0][given], -suggested[given], atol=1e-6)


def test_ppo_on_the_student_raises_the_probability_of_rewarded_actions():
    game = BabyAIGame(GAME)
    episodes = [bot_episode(game, ["forward"] * 50) for _ in range(2)]
    net = student()
    exp = experience(game, episodes, net, 2, [0, 0])
    rule = PPO(AlgoConfig(name="ppo", gamma=0.99, epochs=4))
    head = {"value": ValueHead(128)}
    learner = Learner(net, OptimConfig(lr=3e-3, schedule="constant"), 10, head, algo=rule.cfg, micro_batch_size=8)
    before = net.forward(exp.batch, exp.mask > 0).logp.sum()
    learner.score(exp, rule)
    assert exp.values is not None and exp.old_logp is not None
    metrics, version = learner.update(exp, rule)
    assert version == 4 and metrics["ppo/value_loss"] > 0
    assert float(exp.value_targets[exp.mask > 0].max()) > 0  # GAE: the return flows back to earlier steps
    assert net.forward(exp.batch, exp.mask > 0).logp.sum() > before  # every action was rewarded


@pytest.fixture
def config(tmp_path):
    def make(run="run", **changes):
        raw = {
            "stage": "rl", "seed": 3, "learners": [1, 2], "threads": 2,
            "game": {"name": "babyai", "options": {"hint_every": 8}},
            "player1": {"policy": {"model": "tiny-random"}, "sampling": {"max_new_tokens": 4},
                        "algo": {"name": "reinforce", "group_size": 2}, "optim": {"lr": 1e-3}},
            "player2": {"policy": {"model": "babyai-net"},
                        "algo": {"name": "ppo", "group_size": 2, "epochs": 2, "gamma": 0.99, "guide_coef": 0.5, "guide_decay_steps": 4},
                        "optim": {"lr": 1e-3, "schedule": "constant"}},
            "algo": {"group_size": 2},
            "scenarios_per_step": 2, "micro_batch_size": 8, "max_steps": 3, "eval_scenarios": 4, "save_every": 1,
            "run_dir": str(tmp_path / run),
        }
        raw.update(changes)
        return validate(RLConfig, raw, "test")

    return make


def test_a_network_player_refuses_gradient_checkpointing():
    with pytest.raises(ModelError, match="policy.gradient_checkpointing: 'babyai-net' is not a language model"):
        load_policy(PolicyConfig(model="babyai-net", gradient_checkpointing=True))


def test_oracle_chats_are_the_teachers_view_with_the_bots_hints_and_clone_into_a_teacher(tmp_path, tiny):
    from langgame.cli import main
    from langgame.data.episodes import read_episodes
    from langgame.games.babyai import TEACHER, oracle_chats, teacher_chat
    from langgame.metrics import read_metrics
    from langgame.train import train

    game = BabyAIGame(GAME)
    e = bot_episode(game, ["go forward", "turn left", "nothing", "forward"] * 4)
    chat = teacher_chat(game, e)
    assert tiny.render(chat, 1).ids.tolist() == tiny.encode(game.observation(e, 1)).ids.tolist()  # the same tokens
    assert [t.player for t in chat.turns] == [0] + [2, 1] * len(e.meta["hints"]) and chat.turns[0].text == TEACHER
    for e in oracle_chats(GAME, 6, "eval", seed=1, explore=0.5):
        hints = [t.text for t in e.turns if t.player == 1]
        assert hints == [ACTIONS[b] if b is not None else "none" for b in e.meta["bot"]] and e.meta["seed"] % 2 == 1
    assert main(["data", "babyai", "--out", str(tmp_path / "data"), "--hint-every", "2", "--episodes", "16", "--eval-episodes", "4"]) == 0
    assert len(read_episodes(tmp_path / "data" / "hints.parquet")) == 16
    raw = load_yaml("examples/babyai_teacher_sft.yaml")
    raw.update(policy={"model": "tiny-random"}, threads=1, max_steps=6, eval_every=3, batch_size=8, optim={"lr": 3e-3}, run_dir=str(tmp_path / "sft"),
               data={"train": str(tmp_path / "data" / "hints.parquet"), "eval": str(tmp_path / "data" / "hints_eval.parquet")})
    train(validate(TrainConfig, raw, "test"))
    nll = [r["eval/nll_p1"] for r in read_metrics(tmp_path / "sft") if "eval/nll_p1" in r]
    assert len(nll) == 3 and nll[-1] < nll[0]  # the teacher's hints on held-out level instances grow likelier


def test_per_player_algo_and_optim_are_checked():
    base = {"stage": "rl", "learners": [1, 2], "game": {"name": "babyai"}, "player1": {"policy": {"model": "tiny-random"}}}
    with pytest.raises(ConfigError, match="player1.algo.group_size: episodes per initial context are the run's"):
        validate(RLConfig, {**base, "player1": {**base["player1"], "algo": {"group_size": 3}}}, "t")
    with pytest.raises(ConfigError, match="sharing: shared trains one model for both players"):
        validate(RLConfig, {**base, "sharing": "shared", "player1": {"policy": {}, "optim": {"lr": 1.0}}, "player2": {"policy": {}}}, "t")


def test_teacher_and_student_both_learn_and_a_killed_run_resumes_bit_exactly(config):
    whole = train_rl(config("whole"))
    metrics = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if "game/frames" in m]
    assert len(steps) == 3 and all(m["train/tokens_player1"] > 0 and "ppo/value_loss_player2" in m for m in steps)
    assert any(m["train/loss_player1"] != 0 for m in steps)  # the teacher's gradient: the student's returns
    assert "train/guide_player2" in steps[0] and "train/guide_player2" not in steps[-1]  # annealed to 0 after 4 optimizer steps
    assert "eval/success" in metrics[-1]
    reloaded = load_policy(str(whole / "final" / "player2"))
    assert type(reloaded).__name__ == "NetPolicy" and reloaded.model.config.hidden_size == 128

    cut = config("cut")
    kill_and_resume(cut, at=2)
    for seat in ("player1", "player2"):
        a, b = final_weights(whole, seat), final_weights(cut.run_dir, seat)
        assert a and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("level", ["BabyAI-GoToLocal-v0", "BabyAI-PickupLoc-v0"])
def test_harder_levels_are_described_encoded_and_solved_with_the_oracle(level):
    game = BabyAIGame(BabyAIGame.Options(level=level, hint_every=4))
    e = game.initial(random.Random(5), "train")
    view = game.observation(e, 2)
    words = view.inputs["mission"][0]
    assert (words[words > 0] > 1).all(), e.meta["mission"]  # 1 would be a word the student does not know
    assert " (" in describe(e.state.obs) and "no objects" not in describe(e.state.obs)
    while (p := game.current_player(e)) is not None:
        game.apply(e, Turn(p, game.scripted_turn(e, 1) if p == 1 else ACTIONS[game.bot_action(e.state)]))
    game.judge([e])
    assert e.meta["success"] and game.metrics([e])["hint_agreement"] == 1.0
