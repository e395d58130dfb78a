"""The HTML report: self-contained, escapes untrusted model text, renders in a real browser."""

import json
import re
import shutil
import subprocess

import pytest

from langgame.data.episodes import write_episodes
from langgame.game import Episode, Payoff, Turn
from langgame.report import write_report

HOSTILE = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">' + "</details><b>forged</b>"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def run_dir(tmp_path):
    """A run directory in the formats the drivers write: config, metrics, summary, episodes, cross-play."""
    d = tmp_path / "run"
    (d / "episodes").mkdir(parents=True)
    (d / "config.yaml").write_text("stage: rl\nlearners: [1, 2]\ngame: {name: redteam}\n")
    rows = [{"step": s, "eval/asr": 0.5 - s / 40, "eval_initial_p2/asr": 0.5, "reward/p1": 0.1 * s, "reward/p2": -0.1 * s,
             "train/kl_player1": 0.01 * s} for s in range(0, 11, 2)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "summary.json").write_text(json.dumps({"eval_first": rows[0], "eval_last": rows[-1]}))
    episodes = [Episode([Turn(1, HOSTILE + "x" * 900), Turn(2, "I can't help with that.", rewards=(0.2, -0.2))],
                        payoff=Payoff.ZERO_SUM, id=f"e{i}", meta={"kind": "attack", "harm": 0.2}) for i in range(3)]
    write_episodes(d / "episodes" / "eval_step0000010.parquet", episodes)
    (d / "crossplay.json").write_text(json.dumps({
        "attackers": ["initial", "step_0000010"], "defenders": ["initial", "step_0000010", "baseline <rlhf>"],
        "payoff_p1": [[0.3, 0.1, 0.2], [0.6, 0.2, 0.4]], "meta_nash": {"attackers": [0, 1], "defenders": [0, 1, 0]},
        "nash_conv": 0.0, "scenarios": 64}))
    (d / "best_response_p1.json").write_text(json.dumps({"player": 1, "steps": 5, "before": 0.1, "after": 0.3, "gain": 0.2}))
    return d


def test_report_escapes_untrusted_text_and_is_self_contained(run_dir):
    page = write_report(run_dir).read_text()
    assert "<script>window.pwned" not in page and 'onerror="window' not in page and "<b>forged</b>" not in page
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in page
    assert "Content warning" in page and "[truncated]" in page and "x" * 500 not in page
    assert "baseline &lt;rlhf&gt;" in page  # labels are escaped too
    assert not re.search(r'(src|href)="(http|//)', page)  # nothing fetched from anywhere
    assert page.count("<script>") == 1 and "Content-Security-Policy" in page
    assert page.count('<img alt="plot"') >= 5  # curves + the cross-play heatmap


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (make test installs Debian's chromium where apt-get is available)")
def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    page = write_report(run_dir)
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
         "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    ).stdout
    images = page.read_text().count('<img alt="plot"')
    assert f'data-images="{images}"' in dom  # every plot decoded and rendered, and our script ran
    assert 'data-transcripts="3"' in dom
    assert dom.count("<img") == images  # the hostile <img onerror> never became an element
    assert dom.count("<script>") == 1  # nor the hostile <script>: it is text
