"""Both players learn: sharing modes (separate, lora, shared), schedules, references, resume."""

import json

import numpy as np
import pytest
import torch
from pydantic import BaseModel

from conftest import final_weights, kill_and_resume
from langgame.config import load_train_config
from langgame.game import Episode, Game, Payoff, view
from langgame.games import GAMES
from langgame.metrics import read_metrics
from langgame.objective import token_logprobs
from langgame.rl import RLRun, train_rl
from langgame.rollout import with_turn_rewards


def frac(text, letter):
    return text.count(letter) / max(len(text), 1)


class DuelGame(Game):
    """Player 1 earns the share of 'b' in its message, player 2 the share of 'a' in its reply; zero-sum."""

    name = "duel"
    payoff = Payoff.ZERO_SUM

    class Options(BaseModel):
        pass

    def __init__(self, options=None):
        self.judged = 0  # game state that a resumed run must restore

    def initial(self, rng, split):
        return Episode([], payoff=self.payoff, meta={"n": rng.randrange(10)})

    def observation(self, episode, player):
        return view(episode, player, "You attack." if player == 1 else "You defend.")

    def judge(self, episodes):
        for e in episodes:
            x = frac(e.turns[0].text, "b") - frac(e.turns[1].text, "a")
            with_turn_rewards(e, 1, (x, -x))
        self.judged += len(episodes)

    def metrics(self, episodes):
        return {"b1": float(np.mean([frac(e.turns[0].text, "b") for e in episodes])),
                "a2": float(np.mean([frac(e.turns[1].text, "a") for e in episodes]))}

    def state_dict(self):
        return {"judged": self.judged}

    def load_state_dict(self, state):
        self.judged = state["judged"]


@pytest.fixture
def config(tmp_path, monkeypatch):
    monkeypatch.setitem(GAMES, "duel", "test_two_learners:DuelGame")

    def make(run="run", **changes):
        tiny = {"policy": {"model": "tiny-random"}, "sampling": {"max_new_tokens": 6}}
        cfg = {"stage": "rl", "seed": 2, "learners": [1, 2], "game": {"name": "duel"}, "player1": tiny, "player2": tiny,
               "algo": {"name": "reinforce", "group_size": 4}, "optim": {"lr": 2e-2, "schedule": "constant"},
               "scenarios_per_step": 4, "micro_batch_size": 8, "max_steps": 4, "eval_scenarios": 8, "save_every": 2,
               "run_dir": str(tmp_path / run)}
        cfg.update(changes)
        path = tmp_path / f"{run}.yaml"
        path.write_text(json.dumps(cfg))
        return load_train_config(path)

    return make


def test_both_players_learn_with_separate_models(config):
    run_dir = train_rl(config(max_steps=25, save_every=0))
    first, last = (json.loads((run_dir / "summary.json").read_text())[k] for k in ("eval_first", "eval_last"))
    assert last["eval/b1"] > first["eval/b1"] + 0.15 and last["eval/a2"] > first["eval/a2"] + 0.15
    # each learner's initial policy is also evaluated against the other's current one
    assert last["eval_initial_p2/b1"] == pytest.approx(last["eval/b1"])  # same attacks (same seed, same attacker)
    assert last["eval_initial_p2/a2"] < last["eval/a2"]  # the initial defender never learned to write 'a'
    assert first["eval_initial_p1/a2"] == first["eval/a2"]  # before any update the profiles coincide (reused)
    assert (run_dir / "final" / "player1").is_dir() and (run_dir / "final" / "player2").is_dir()
    quick = json.loads((train_rl(config("quick", max_steps=1, save_every=0, eval_initial=False)) / "summary.json").read_text())
    assert "eval/a2" in quick["eval_last"] and not any(k.startswith("eval_initial") for k in quick["eval_last"])


def test_alternating_schedule_updates_one_player_at_a_time(config):
    run = RLRun(config(schedule={"kind": "alternating", "player2_steps": 2, "player1_steps": 1}), None)
    versions = []
    for _ in range(6):
        run.step()
        versions.append((run.policies[1].version, run.policies[2].version))
    assert versions == [(0, 1), (0, 2), (1, 2), (1, 3), (1, 4), (2, 4)]


def test_lora_sharing_one_frozen_base_two_adapters(config):
    run = RLRun(config(sharing="lora", optim={"lr": 1e-2, "schedule": "constant"}), None)
    model = run.policies[1].model
    assert model is run.policies[2].model and set(model.peft_config) == {"player1", "player2"}
    base = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    for _ in range(3):
        run.step()
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters() if "lora_" not in n)  # the base stays frozen
    a = {n: p for n, p in model.named_parameters() if ".player1." in n and "lora_B" in n}
    b = {n.replace(".player1.", ".player2."): p for n, p in a.items()}
    params = dict(model.named_parameters())
    assert any(p.abs().sum() > 0 for p in a.values())
    assert not all(torch.equal(a[n], params[m]) for n, m in zip(a, b))  # two different adapters
    ids = torch.tensor([[1, 2, 3, 4, 5]], device=model.device)
    attention = torch.ones_like(ids)

    def logp(policy):
        with policy.activated():
            return token_logprobs(policy.model, ids, attention)

    with torch.no_grad():
        reference = logp(run.initial[1])
        from langgame.models import load_policy
        assert torch.allclose(reference, token_logprobs(load_policy("tiny-random").model.to(model.device), ids, attention), atol=1e-6)
        assert not torch.allclose(logp(run.policies[1]), logp(run.policies[2]))


def test_shared_weights_learn_both_roles_with_per_role_baselines(config):
    run = RLRun(config(sharing="shared"), None)
    assert list(run.learners) == ["shared"] and run.policies[1] is run.policies[2]
    seen = {}
    original = run.rules["shared"].advantages

    def spy(exp):
        seen["roles"] = sorted(set(exp.roles.tolist()))
        original(exp)

    run.rules["shared"].advantages = spy
    run.step()
    assert seen["roles"] == [1, 2] and run.policies[1].version == 1  # one update over both roles' samples


@pytest.mark.parametrize("sharing", ["separate", "lora"])
def test_two_learner_resume_equals_uninterrupted_run(config, sharing):
    whole = train_rl(config("whole", sharing=sharing, algo={"name": "reinforce", "group_size": 2, "kl_coef": 0.05}))
    cut = config("cut", sharing=sharing, algo={"name": "reinforce", "group_size": 2, "kl_coef": 0.05})
    kill_and_resume(cut, at=3)
    for seat in ("player1", "player2"):
        a, b = final_weights(whole, seat), final_weights(cut.run_dir, seat)
        assert a and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    state = lambda d: json.loads((d / "checkpoints" / "step_0000004" / "state.json").read_text())["game"]  # noqa: E731
    assert state(cut.run_dir) == state(whole) and state(whole)["judged"] > 4 * 4 * 2  # restored, then counted on
    rewards = lambda d: [r["reward/p1"] for r in read_metrics(d) if "reward/p1" in r]  # noqa: E731
    assert rewards(whole) == rewards(cut.run_dir)


def test_population_plays_against_past_checkpoints(config):
    cfg = config(schedule={"kind": "population"}, max_steps=5, save_every=1, keep_checkpoints=3)
    run_dir = train_rl(cfg)
    assert len(list((run_dir / "checkpoints").glob("step_*"))) == 3
    rows = [r for r in read_metrics(run_dir) if "reward/p1" in r]
    assert len(rows) == 5 and all(np.isfinite(r["reward/p1"]) for r in rows)
    from langgame.schedule import opponent_snapshot

    picks = {opponent_snapshot(run_dir, "player2", 0, i, 1) for i in range(40)}
    assert None in picks and len(picks) == 4  # the initial policy and each kept checkpoint


def test_cross_play_matrix_and_meta_nash_of_saved_checkpoints(config):
    from langgame.crossplay import cross_play, pool
    from langgame.rl import play_scenarios
    from langgame.rollout import Actor
    from langgame.games import make_game
    from langgame.models import load_policy

    cfg = config(max_steps=4, save_every=2, keep_checkpoints=3)
    run_dir = train_rl(cfg)
    baseline = train_rl(config("baseline", learners=[2], max_steps=2, save_every=0))
    result = cross_play(run_dir, [baseline], scenarios=6)
    assert result["attackers"] == ["initial", "step_0000002", "step_0000004"]
    assert result["defenders"] == ["initial", "step_0000002", "step_0000004", "baseline baseline"]
    payoff = np.array(result["payoff_p1"])
    assert payoff.shape == (3, 4)
    x, y = np.array(result["meta_nash"]["attackers"]), np.array(result["meta_nash"]["defenders"])
    assert x.sum() == pytest.approx(1) and y.sum() == pytest.approx(1) and result["nash_conv"] == pytest.approx(0, abs=1e-6)
    # a cell is the mean return of that pair on the held-out scenarios, reproducible by playing it directly
    game = make_game(cfg.game)
    (_, a), (_, d) = pool(run_dir, 1)[2], pool(run_dir, 2)[1]
    players = {1: Actor(load_policy(a), cfg.player1.sampling), 2: Actor(load_policy(d), cfg.player2.sampling)}
    episodes, _ = play_scenarios(game, players, "eval", 6, 1, (cfg.seed, "eval"))
    assert payoff[2, 1] == pytest.approx(np.mean([e.returns()[0] for e in episodes]))
    assert (run_dir / "crossplay.json").is_file()


def test_best_response_probe_trains_a_fresh_player_against_the_frozen_final_one(config):
    from langgame.crossplay import best_response

    run_dir = train_rl(config(max_steps=2, save_every=0))
    result = best_response(run_dir, player=2, steps=8)
    assert result["gain"] == pytest.approx(result["after"] - result["before"]) and result["gain"] > 0
    assert json.loads((run_dir / "best_response_p2.json").read_text()) == result
    probe_cfg = json.loads(json.dumps(__import__("yaml").safe_load((run_dir / "best_response_p2" / "config.yaml").read_text())))
    assert probe_cfg["learners"] == [2] and probe_cfg["player1"]["policy"]["model"].endswith("final/player1")


def test_summary_and_report_commands_on_a_real_run(config, capsys):
    from langgame.cli import main

    run_dir = train_rl(config(max_steps=2, save_every=0))
    assert main(["summary", str(run_dir), "--match", "b1"]) == 0
    out = capsys.readouterr().out
    assert "eval/b1" in out and "eval_initial_p2/b1" in out and "a2" not in out
    assert main(["report", str(run_dir)]) == 0
    page = (run_dir / "report.html").read_text()
    assert "eval/b1" in page and page.count("transcript") >= 8  # the run's evaluation episodes


def test_lora_sharing_on_a_model_without_those_modules_fails_before_any_compute(config):
    from langgame.config import ConfigError

    bad = {"policy": {"model": "tiny-random", "lora": {"target_modules": ["no_such_proj"]}}, "sampling": {"max_new_tokens": 6}}
    with pytest.raises(ConfigError, match="player1.policy: sharing: lora cannot wrap 'tiny-random'"):
        RLRun(config(sharing="lora", player1=bad, player2=bad), None)
