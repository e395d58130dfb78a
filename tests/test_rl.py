"""RL against a fixed opponent: rollouts, per-role baselines, KL, PPO, and the driver."""

import json
import math

import numpy as np
import pytest
import torch
from pydantic import BaseModel
from safetensors.torch import load_file

from conftest import final_weights, kill_and_resume, write_config
from langgame.algos.base import Experience
from langgame.algos.ppo import clipped_weights, gae
from langgame.algos.reinforce import Reinforce, loo_baseline
from langgame.config import AlgoConfig, ConfigError, GameConfig, Sampling, load_train_config
from langgame.game import Episode, Game, Payoff, Turn, learner_rewards, view
from langgame.games import GAMES, make_game
from langgame.metrics import read_metrics
from langgame.objective import kl_estimate, policy_forward
from langgame.rl import experience, train_rl
from langgame.rollout import Actor, play, with_turn_rewards


class LettersGame(Game):
    """Player 1 (scripted) asks for text; player 2 earns the fraction of 'a' in its reply. Zero-sum."""

    name = "letters"
    payoff = Payoff.ZERO_SUM

    class Options(BaseModel):
        max_turns: int = 2

    def __init__(self, options=None):
        self.max_turns = (options or self.Options()).max_turns

    def initial(self, rng, split):
        return Episode([Turn(0, "Write letters.")], payoff=self.payoff, meta={"n": rng.randrange(100), "split": split})

    def observation(self, episode, player):
        return view(episode, player, "You write letters." if player == 2 else "You ask.")

    def scripted_turn(self, episode, player):
        return f"Letters please, round {episode.meta['n']}."

    def judge(self, episodes):
        for e in episodes:
            last = max(i for i, t in enumerate(e.turns) if t.player == 2)
            text = e.turns[last].text
            score = text.count("a") / max(len(text), 1)
            with_turn_rewards(e, last, (-score, score))

    def metrics(self, episodes):
        return {"a_fraction": float(np.mean([e.returns()[1] for e in episodes]))}


@pytest.fixture
def letters(monkeypatch):
    monkeypatch.setitem(GAMES, "letters", "test_rl:LettersGame")
    return make_game(GameConfig(name="letters"))


# --- learning-rule pieces, checked against hand computations ---------------------------------------


def test_loo_baseline_is_per_group_and_never_mixes_roles():
    returns = torch.tensor([1.0, 3.0, 5.0, 10.0, 20.0, 7.0])
    groups = torch.tensor([0, 0, 0, 0, 0, 1])
    roles = torch.tensor([2, 2, 2, 1, 1, 2])
    b = loo_baseline(returns, groups, roles)
    assert b.tolist() == [4.0, 3.0, 2.0, 20.0, 10.0, 0.0]  # role-1 samples only see role-1 samples


def test_reinforce_advantage_is_reward_to_go_minus_baseline():
    mask = torch.tensor([[0, 1, 1, 0, 1], [0, 1, 1, 1, 0]], dtype=torch.float32)
    rewards = torch.tensor([[0, 0, 0.5, 0, 1.0], [0, 0, 0, 2.0, 0]])
    exp = Experience(None, mask, rewards, torch.tensor([1.5, 2.0]), torch.tensor([0, 0]), torch.tensor([2, 2]))
    Reinforce(AlgoConfig()).advantages(exp)
    # row 0: G = [1.5, 1.5, 1.5, 1, 1] minus baseline 2.0 (the other episode's return)
    assert torch.allclose(exp.advantages[0], torch.tensor([0, -0.5, -0.5, 0, -1.0]))
    assert torch.allclose(exp.advantages[1], torch.tensor([0, 0.5, 0.5, 0.5, 0]))


def test_gae_matches_the_recursion_by_hand():
    mask = torch.tensor([[0, 1, 0, 1, 1]], dtype=torch.float32)
    rewards = torch.tensor([[0, 0.0, 0, 0.0, 1.0]])
    values = torch.tensor([[0, 0.2, 0, 0.5, 0.9]])
    gamma, lam = 0.9, 0.8
    adv, targets = gae(rewards, values, mask, gamma, lam)
    d4 = 1.0 - 0.9
    d3 = 0.0 + gamma * 0.9 - 0.5
    d1 = 0.0 + gamma * 0.5 - 0.2
    a4, a3 = d4, d3 + gamma * lam * d4
    a1 = d1 + gamma * lam * a3
    assert torch.allclose(adv, torch.tensor([[0, a1, 0, a3, a4]]), atol=1e-6)
    assert torch.allclose(targets, adv + values * mask)


def test_ppo_weights_have_the_clipped_surrogates_gradient():
    logp = torch.tensor([-1.0, -1.0, -1.0, -1.0, -2.0], requires_grad=True)
    old = torch.tensor([-1.5, -0.5, -1.5, -0.5, -2.0])  # ratios e^.5, e^-.5, e^.5, e^-.5, 1
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0, 2.0])
    clip = 0.2
    w, surrogate, clipped = clipped_weights(logp, old, adv, clip)
    assert clipped.tolist() == [True, False, False, True, False]
    ratio = torch.exp(logp - old)
    ppo = torch.minimum(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv).sum()
    (expected,) = torch.autograd.grad(ppo, logp)
    (got,) = torch.autograd.grad((w * logp).sum(), logp)
    assert torch.allclose(got, expected)
    assert torch.allclose(surrogate.sum(), ppo)


def test_kl_estimators_are_unbiased_for_a_categorical():
    torch.manual_seed(0)
    p = torch.softmax(torch.tensor([1.0, 0.0, -1.0, 2.0]), 0)
    q = torch.softmax(torch.tensor([0.0, 0.5, 0.0, 1.0]), 0)
    true_kl = float((p * (p / q).log()).sum())
    samples = torch.multinomial(p, 200_000, replacement=True)
    logp, logq = p.log()[samples], q.log()[samples]
    k1, k3 = kl_estimate(logp, logq, "k1"), kl_estimate(logp, logq, "k3")
    assert float(k1.mean()) == pytest.approx(true_kl, abs=5e-3)
    assert float(k3.mean()) == pytest.approx(true_kl, abs=5e-3)
    assert bool((k3 >= 0).all()) and bool((k1 < 0).any())
    assert float(k3.var()) < float(k1.var())


# --- rollouts ---------------------------------------------------------------------------------------


def played(letters, tiny, n=6, seed=0, sampling=Sampling(max_new_tokens=12), rounds=2):
    letters.max_turns = rounds
    episodes = [letters.initial(__import__("random").Random(i), "train") for i in range(n)]
    return play(letters, {1: Actor(None), 2: Actor(tiny, sampling)}, episodes, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_rollout_logprobs_equal_the_training_forward(letters, tiny, temperature):
    # two player-2 turns each, with the KV cache reused across steps; the policy is softmax(logits / T)
    episodes = played(letters, tiny, rounds=4, sampling=Sampling(max_new_tokens=12, temperature=temperature))
    exp = experience(letters, episodes, tiny, 2, list(range(len(episodes))))
    with torch.no_grad():
        logp = policy_forward(tiny.model, exp.batch.ids, exp.batch.attention, temperature=temperature).logp
    for i, e in enumerate(episodes):
        sampled = [lp for t in e.turns if t.player == 2 for lp in t.logprobs]
        got = logp[i][exp.mask[i] > 0]
        assert len(got) == len(sampled) > 0
        assert torch.allclose(got, torch.tensor(sampled), atol=1e-4)


def test_rollout_is_reproducible_and_judged(letters, tiny):
    a, b = played(letters, tiny, seed=5), played(letters, tiny, seed=5)
    assert [t.tokens for e in a for t in e.turns] == [t.tokens for e in b for t in e.turns]
    assert [t.tokens for e in a for t in e.turns] != [t.tokens for e in played(letters, tiny, seed=6) for t in e.turns]
    for e in a:
        r1, r2 = e.returns()
        assert r1 == -r2 and r2 == e.turns[-1].text.count("a") / max(len(e.turns[-1].text), 1)


def test_a_policy_that_never_ends_its_turn_is_cut_and_marked(letters, tiny):
    eot = tiny.eot_id
    hook = tiny.model.lm_head.register_forward_hook(lambda m, i, out: out.index_fill(-1, torch.tensor([eot]), -math.inf))
    try:
        episodes = played(letters, tiny, sampling=Sampling(max_new_tokens=7))
    finally:
        hook.remove()
    turns = [t for e in episodes for t in e.turns if t.player == 2]
    assert all(t.truncated and len(t.tokens) == 7 and eot not in t.tokens for t in turns)
    r = tiny.render(episodes[0])
    # the environment closes a truncated turn: the end-of-turn token after it is player 0's
    closing = np.flatnonzero(r.owner == 2)[-1] + 1
    assert r.ids[closing] == eot and r.owner[closing] == 0


def test_learner_rewards_go_to_its_last_action_before_the_reward(tiny):
    e = Episode([Turn(1, "q"), Turn(2, "a"), Turn(1, "judge says", rewards=(0.0, 2.0))])
    r = tiny.render(e)
    got = learner_rewards(e, r, 2)
    last_p2 = np.flatnonzero(r.owner == 2)[-1]
    assert got[last_p2] == 2.0 and got.sum() == 2.0


# --- the driver --------------------------------------------------------------------------------------


@pytest.fixture
def rl_config(tmp_path, letters):
    def make(run="run", **changes):
        cfg = {
            "stage": "rl",
            "seed": 1,
            "game": {"name": "letters"},
            "player2": {"policy": {"model": "tiny-random"}, "sampling": {"max_new_tokens": 8}},
            "algo": {"name": "reinforce", "group_size": 4},
            "optim": {"lr": 2e-2, "schedule": "constant", "max_grad_norm": 1.0},
            "scenarios_per_step": 4,
            "micro_batch_size": 8,
            "max_steps": 4,
            "eval_scenarios": 8,
            "save_every": 2,
            "run_dir": str(tmp_path / run),
        }
        return write_config(tmp_path / f"{run}.yaml", cfg, changes)

    return make


@pytest.mark.parametrize("algo,lr", [
    ({"name": "reinforce", "group_size": 4}, 1e-2),  # 2e-2 can collapse onto one deterministic reply
    ({"name": "ppo", "group_size": 4, "epochs": 2, "kl_coef": 0.01, "kl_estimator": "k1", "kl_in": "reward"}, 5e-3),
])
def test_learning_raises_the_learners_reward(rl_config, algo, lr):
    run_dir = train_rl(load_train_config(rl_config(algo=algo, optim={"lr": lr, "schedule": "constant"}, max_steps=25, save_every=0)))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["eval_last"]["eval/a_fraction"] > summary["eval_first"]["eval/a_fraction"] + 0.15
    rows = [r for r in read_metrics(run_dir) if "reward/p2" in r]
    assert np.mean([r["reward/p2"] for r in rows[-5:]]) > np.mean([r["reward/p2"] for r in rows[:5]]) + 0.1


def test_rl_resume_equals_uninterrupted_run(rl_config):
    algo = {"name": "ppo", "group_size": 2, "kl_coef": 0.05, "entropy_coef": 0.01}
    whole = train_rl(load_train_config(rl_config("whole", algo=algo)))
    cut_cfg = load_train_config(rl_config("cut", algo=algo))
    kill_and_resume(cut_cfg, at=3)
    a, b = final_weights(whole), final_weights(cut_cfg.run_dir)
    assert a and all(torch.equal(a[k], b[k]) for k in a)
    va = load_file(whole / "checkpoints" / "step_0000004" / "player2" / "value.safetensors")
    vb = load_file(cut_cfg.run_dir / "checkpoints" / "step_0000004" / "player2" / "value.safetensors")
    assert all(torch.equal(va[k], vb[k]) for k in va)
    rewards = lambda d: [r["reward/p2"] for r in read_metrics(d) if "reward/p2" in r]  # noqa: E731
    assert rewards(whole) == rewards(cut_cfg.run_dir) and len(rewards(whole)) == 4


def test_lora_learner_uses_the_base_model_as_reference(rl_config):
    cfg = rl_config(algo={"name": "reinforce", "kl_coef": 0.1, "entropy_coef": 1.0}, player2={"policy": {"model": "tiny-random", "lora": {"r": 4}},
                                                                         "sampling": {"max_new_tokens": 8}}, max_steps=3)
    run_dir = train_rl(load_train_config(cfg))
    kls = [r["train/kl_player2"] for r in read_metrics(run_dir) if "train/kl_player2" in r]
    assert kls[0] == pytest.approx(0.0, abs=1e-6) and kls[-1] > 0  # the adapter starts at the base model, then moves


def test_rl_config_errors(rl_config, tmp_path):
    with pytest.raises(ConfigError, match="unknown game 'chess'; available: .*secret"):
        make_game(GameConfig(name="chess"))
    with pytest.raises(ConfigError, match="player2 is a learner, so it needs a policy"):
        load_train_config(rl_config(player2={"policy": None}))
    with pytest.raises(ConfigError, match="sharing: lora needs both players to learn"):
        load_train_config(rl_config(sharing="lora"))
    with pytest.raises(ConfigError, match="schedule: population samples past checkpoints, so it needs save_every"):
        load_train_config(rl_config(learners=[1, 2], player1={"policy": {"model": "tiny-random"}}, schedule={"kind": "population"}, save_every=0))
    with pytest.raises(ConfigError, match="algo.name: Input should be 'reinforce' or 'ppo'"):
        load_train_config(rl_config(algo={"name": "dpo"}))
