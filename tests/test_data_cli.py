"""`langgame data synth | prepare | show` and the procedural Q-C-A generator."""

import pytest

from langgame.cli import main
from langgame.data.episodes import DataError, read_episodes
from langgame.data.synth import REASONERS, answer_text, score, synth_episodes
from langgame.game import Payoff


def test_synth_is_seeded_and_its_answers_are_right():
    a = synth_episodes(30, seed=4)
    assert [t.text for e in a for t in e.turns] == [t.text for e in synth_episodes(30, seed=4) for t in e.turns]
    assert [t.text for e in a for t in e.turns] != [t.text for e in synth_episodes(30, seed=5) for t in e.turns]
    tasks_seen = set()
    for e in a:
        assert [t.player for t in e.turns] == [0, 1, 2, 1, 2]
        assert e.payoff is Payoff.IDENTICAL_INTEREST
        answers = [t for t in e.turns if t.player == 2]
        for turn, task, answer in zip(answers, e.meta["tasks"], e.meta["answers"]):
            tasks_seen.add(task)
            assert turn.text == answer_text(answer) and turn.thought
            # reasoning-gym's own verifier accepts the logged answer and rejects a wrong one
            assert score(task, turn.text, {"answer": answer, "metadata": {}}) == 1.0
            assert score(task, answer_text("###"), {"answer": answer, "metadata": {}}) == 0.0
    assert tasks_seen == set(REASONERS)


def test_synth_rejects_unknown_tasks():
    with pytest.raises(ValueError, match="available: chain_sum"):
        synth_episodes(2, 0, tasks=["chess"])


def test_cli_synth_writes_disjoint_train_and_eval(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path), "--train", "40", "--eval", "20", "--no-thoughts"]) == 0
    train, held_out = read_episodes(tmp_path / "train.parquet"), read_episodes(tmp_path / "eval.parquet")
    assert len(train) == 40 and 0 < len(held_out) <= 20
    train_questions = {t.text for e in train for t in e.turns if t.player == 1}
    assert not train_questions & {t.text for e in held_out for t in e.turns if t.player == 1}
    assert all(t.thought is None for e in train for t in e.turns)


def test_cli_prepare_and_show(tmp_path, capsys):
    src = tmp_path / "notes.txt"
    src.write_text("Q: What is 2+2?\nC: add\nA: 4\n---\nQ: broken\n")
    out = tmp_path / "notes.parquet"
    assert main(["data", "prepare", str(src), "--out", str(out)]) == 2
    assert f"error: {src}:5: Q: has no A:" in capsys.readouterr().err
    assert main(["data", "prepare", str(src), "--out", str(out), "--skip-invalid"]) == 0
    assert "1 episodes from 1 file(s); skipped 1 invalid" in capsys.readouterr().out
    [episode] = read_episodes(out)
    assert [(t.player, t.text, t.thought) for t in episode.turns] == [(1, "What is 2+2?", None), (2, "4", "add")]
    assert main(["data", "show", str(out), "--model", "tiny-random"]) == 0
    assert "What is 2+2?" in capsys.readouterr().out


def test_reading_a_non_episode_file_names_it(tmp_path):
    bad = tmp_path / "x.parquet"
    bad.write_text("not parquet")
    with pytest.raises(DataError, match=f"{bad}: not a readable Parquet file"):
        read_episodes(bad)
    with pytest.raises(DataError, match="langgame data prepare"):
        read_episodes(tmp_path / "missing.parquet")


def test_help_and_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and "langgame 0.1.0" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for command in ("models", "data", "train"):
        assert command in text
