"""Self-play of LM players in OpenSpiel games with exact values: MMD, fictitious play, schedules."""

import json
import math

import numpy as np
import pytest
import torch
from open_spiel.python import policy as policy_lib
from open_spiel.python.algorithms import action_value
from open_spiel.python.algorithms import exploitability as spiel_exploitability

from langgame.algos.mmd import mmd_target, target_loss
from langgame.config import ConfigError, load_train_config
from langgame.equilibrium import exploitability_curve
from langgame.games.spiel import SpielGameError, load_game
from langgame.metrics import read_metrics
from langgame.selfplay import SelfPlay, train_selfplay


def test_mmd_target_is_the_closed_form_step():
    logp = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.9, 0.1, 0.0]]))
    q = torch.tensor([[1.0, 0.0, -1.0], [0.0, 2.0, 5.0]])
    magnet = torch.log(torch.tensor([[1 / 3] * 3, [0.5, 0.5, 0.0]]))
    eta, alpha = 0.5, 0.2
    got = mmd_target(logp, q, magnet, alpha, eta)
    for row in range(2):
        legal = torch.isfinite(logp[row])
        z = (logp[row][legal] + eta * alpha * magnet[row][legal] + eta * q[row][legal]) / (1 + eta * alpha)
        assert torch.allclose(got[row][legal], torch.softmax(z, 0), atol=1e-6)
    assert got[1, 2] == 0  # an illegal action never gets mass, whatever its value
    # the fit is behaviour cloning onto the target: d/dlog pi of the mean over 2 states of -sum_a t log pi is -t / 2
    fitted = torch.log(got).requires_grad_(True)
    (grad,) = torch.autograd.grad(target_loss(fitted, got), fitted)
    assert torch.allclose(grad[:, :2], -got[:, :2] / 2, atol=1e-6)


def tabular_run(game_name, alpha, eta, steps):
    game = load_game(game_name).game
    tab = policy_lib.TabularPolicy(game)
    calc = action_value.TreeWalkCalculator(game)
    legal = torch.tensor(tab.legal_actions_mask, dtype=torch.bool)
    uniform = torch.where(legal, -torch.log(legal.sum(-1, keepdim=True).float()), torch.tensor(-math.inf))
    tab.action_probability_array[0] = [0.6, 0.3, 0.1]  # start away from the equilibrium
    curve = []
    for _ in range(steps):
        q = torch.tensor(np.asarray(calc([tab, tab], tab).action_values), dtype=torch.float32)
        logp = torch.where(legal, torch.tensor(tab.action_probability_array).float().log(), torch.tensor(-math.inf))
        tab.action_probability_array = mmd_target(logp, q, uniform, alpha, eta).double().numpy()
        curve.append(spiel_exploitability.exploitability(game, tab))
    return curve


def test_magnet_makes_the_last_iterate_converge_where_hedge_cycles():
    hedge = tabular_run("matrix_rps", alpha=0.0, eta=0.5, steps=300)
    mmd = tabular_run("matrix_rps", alpha=0.2, eta=0.5, steps=300)
    assert mmd[-1] < 1e-3
    assert min(hedge[-100:]) > 0.05  # simultaneous mirror descent spirals away instead


@pytest.fixture
def config(tmp_path):
    def make(name="run", **changes):
        cfg = {"stage": "selfplay", "game": "kuhn_poker", "text": "compact", "policy": {"model": "tiny-random"},
               "algo": "mmd", "alpha": 0.1, "eta": 0.3, "fit_steps": 10, "optim": {"lr": 1e-2, "schedule": "constant"},
               "max_steps": 40, "eval_every": 20, "save_every": 20, "run_dir": str(tmp_path / name)}
        cfg.update(changes)
        path = tmp_path / f"{name}.yaml"
        path.write_text(json.dumps(cfg))
        return load_train_config(path)

    return make


def test_selfplay_lowers_exploitability_and_logs_what_it_saved(config):
    cfg = config()
    run_dir = train_selfplay(cfg)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["eval_first"]["step"] == 0  # the initial tiny LM, evaluated before the first update
    assert summary["eval_last"]["eval/exploitability"] < 0.8 * summary["eval_first"]["eval/exploitability"]
    rows, plot = exploitability_curve(run_dir, cfg)
    logged = {r["step"]: r["eval/exploitability"] for r in read_metrics(run_dir) if "eval/exploitability" in r}
    assert [r["step"] for r in rows] == [20, 40] and plot.is_file()
    for r in rows:  # the checkpoints hold exactly the policies that were evaluated during training
        assert r["exploitability"] == pytest.approx(logged[r["step"]], abs=1e-6)


def test_fictitious_play_resumes_exactly(config, monkeypatch):
    import langgame.selfplay as sp

    whole = train_selfplay(config("whole", algo="fp", max_steps=6, eval_every=3, save_every=3, fit_steps=2))
    step = sp.SelfPlay.step

    def dying(self):
        if self.iteration == 4:
            raise RuntimeError("killed")
        return step(self)

    cut = config("cut", algo="fp", max_steps=6, eval_every=3, save_every=3, fit_steps=2)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sp.SelfPlay, "step", dying)
        with pytest.raises(RuntimeError):
            train_selfplay(cut)
    train_selfplay(cut, resume=True)
    a = [r for r in read_metrics(whole) if "eval/exploitability_average" in r]
    b = [r for r in read_metrics(cut.run_dir) if "eval/exploitability_average" in r]
    assert [r["eval/exploitability_average"] for r in a] == [r["eval/exploitability_average"] for r in b]
    assert [r["eval/exploitability"] for r in a] == [r["eval/exploitability"] for r in b]


def test_alternating_schedule_moves_one_player_at_a_time(config):
    run = SelfPlay(config(schedule="alternating", alternate_every=2, fit_steps=1), None)
    versions = []
    for _ in range(4):
        run.step()
        versions.append({seat: learner.policy.version for seat, learner in run.learners.items()})
    assert versions == [{"player1": 1, "player2": 0}, {"player1": 2, "player2": 0},
                        {"player1": 2, "player2": 1}, {"player1": 2, "player2": 2}]


def test_shared_model_plays_both_seats(config):
    run = SelfPlay(config(sharing="shared", fit_steps=1), None)
    assert list(run.learners) == ["shared"]
    run.step()
    assert run.learners["shared"].policy.version == 1


def test_unsupported_games_are_one_line_errors(config):
    with pytest.raises(SpielGameError, match="unknown OpenSpiel game 'chess960x'.*supported: kuhn_poker"):
        SelfPlay(config(game="chess960x"), None)
    with pytest.raises(ConfigError, match="algo: Input should be 'pg', 'mmd' or 'fp'"):
        config(algo="cfr")
