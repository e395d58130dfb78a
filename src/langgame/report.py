"""`langgame report RUN_DIR`: one self-contained HTML page per run (no network, no external files).

Sections: the first and last evaluation, metric curves (PNG data URIs), the cross-play heatmap
and meta-Nash weights (crossplay.json), best-response probes, the resolved config, and a sample
of transcripts from the last evaluation. Model-generated and corpus text is untrusted input: all
of it goes through html.escape, transcripts are truncated and shown folded under a content
warning, and a Content-Security-Policy lets only the page's own script (pinned by its hash) run.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from langgame.checkpoint import write_atomic  # noqa: E402
from langgame.data.episodes import read_episodes  # noqa: E402
from langgame.errors import LanggameError  # noqa: E402
from langgame.metrics import read_metrics  # noqa: E402

SCRIPT = (
    "window.addEventListener('load', () => {"
    " const imgs = [...document.images].filter(i => i.complete && i.naturalWidth > 0).length;"
    " document.body.dataset.images = String(imgs);"
    " document.body.dataset.transcripts = String(document.querySelectorAll('.transcript').length); });"
)
STYLE = (
    "body{font:14px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "th{background:#f3f3f3}.warn{background:#fff3cd;border:1px solid #e0c060;padding:.6em}"
    ".turn{white-space:pre-wrap;margin:.3em 0;padding:.3em .5em;border-left:3px solid #999}"
    ".p1{border-color:#c0392b}.p2{border-color:#2471a3}.p0{border-color:#bbb;color:#666}"
    "img{max-width:100%}pre{background:#f7f7f7;padding:.6em;overflow:auto}"
)


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _curves(metrics: list[dict]) -> str:
    groups: dict[str, list[str]] = {}
    for key in sorted({k for r in metrics for k in r if k != "step"}):
        prefix = key.split("/")[0]
        if prefix in ("eval", "reward", "game") or prefix.startswith("eval_initial") or key.startswith(("train/kl", "train/loss", "rollout/tokens_per_s")):
            groups.setdefault(prefix if not prefix.startswith("train") else key, []).append(key)
    parts = []
    for name, keys in groups.items():
        fig, ax = plt.subplots(figsize=(5.5, 3))
        for key in keys[:8]:
            points = [(r["step"], r[key]) for r in metrics if key in r and r[key] == r[key]]
            if points:
                ax.plot(*zip(*points), marker="." if len(points) < 30 else None, label=key.split("/", 1)[-1])
        ax.set(xlabel="step", title=name)
        ax.legend(fontsize=7)
        fig.tight_layout()
        parts.append(_png(fig))
    return "".join(parts)


def _cross_play(data: dict) -> str:
    import numpy as np

    payoff = np.array(data["payoff_p1"])
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * payoff.shape[1], 1.0 + 0.5 * payoff.shape[0]))
    image = ax.imshow(payoff, cmap="Reds", aspect="auto")
    for (i, j), v in np.ndenumerate(payoff):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8)
    ax.set(xticks=range(len(data["defenders"])), yticks=range(len(data["attackers"])), xlabel="defender (player 2)",
           ylabel="attacker (player 1)", title="mean R1 (harm)")
    ax.set_xticklabels(data["defenders"], rotation=30, ha="right", fontsize=7)
    ax.set_yticklabels(data["attackers"], fontsize=7)
    fig.colorbar(image)
    fig.tight_layout()
    weights = "".join(
        f"<tr><th>{html.escape(side)}</th>" + "".join(f"<td>{html.escape(n)}: {w:.2f}</td>" for n, w in zip(data[side], data["meta_nash"][side])) + "</tr>"
        for side in ("attackers", "defenders")
    )
    return (f"<h2>Cross-play</h2>{_png(fig)}<h3>Meta-game Nash equilibrium</h3><table>{weights}</table>"
            f"<p>Population NashConv: {data['nash_conv']:.4f} ({data['scenarios']} held-out scenarios per cell)</p>")


def _transcripts(episodes, limit: int, chars: int) -> str:
    out = ['<h2>Transcripts (last evaluation)</h2><p class="warn"><b>Content warning:</b> red-team transcripts can '
           f"contain harmful text written by models or taken from red-team corpora. Each turn is cut to {chars} characters.</p>"]
    for e in episodes[:limit]:
        facts = ", ".join(f"{html.escape(str(k))}={html.escape(str(v))[:60]}" for k, v in e.meta.items()
                          if k in ("kind", "harm", "leaked", "correct", "refused", "task"))
        turns = []
        for t in e.turns:
            text = t.text if len(t.text) <= chars else t.text[:chars] + " …[truncated]"
            turns.append(f'<div class="turn p{t.player}"><b>player {t.player}:</b> {html.escape(text)}</div>')
        out.append(f'<details class="transcript"><summary>{html.escape(e.id or "episode")} — R = {e.returns()[0]:.2f}, '
                   f"{e.returns()[1]:.2f} {facts}</summary>{''.join(turns)}</details>")
    return "".join(out)


def write_report(run_dir: str | Path, transcripts: int = 12, chars: int = 400) -> Path:
    """Write run_dir/report.html and return its path."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise LanggameError(f"{run_dir}: not a run directory (no config.yaml)")
    metrics = read_metrics(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
    body = [f"<h1>langgame run: {html.escape(run_dir.name)}</h1>"]
    first, last = summary.get("eval_first", {}), summary.get("eval_last", {})
    if last:
        rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{first.get(k, float('nan')):.4f}</td><td>{v:.4f}</td></tr>"
                       for k, v in last.items() if k != "step" and isinstance(v, (int, float)))
        body.append(f"<h2>Held-out evaluation</h2><table><tr><th>metric</th><th>first (step {first.get('step', '-')})</th>"
                    f"<th>last (step {last.get('step', '-')})</th></tr>{rows}</table>")
    if metrics:
        body.append(f"<h2>Curves</h2>{_curves(metrics)}")
    if (run_dir / "crossplay.json").is_file():
        body.append(_cross_play(json.loads((run_dir / "crossplay.json").read_text())))
    probes = [json.loads(p.read_text()) for p in sorted(run_dir.glob("best_response_p*.json"))]
    if probes:
        rows = "".join(f"<tr><td>{p['player']}</td><td>{p['steps']}</td><td>{p['before']:.4f}</td><td>{p['after']:.4f}</td>"
                       f"<td>{p['gain']:.4f}</td></tr>" for p in probes)
        body.append("<h2>Best-response probes</h2><p>A fresh learner trained against the other player's frozen final "
                    "policy; its gain bounds that policy's exploitability from below.</p><table><tr><th>learner</th>"
                    f"<th>steps</th><th>return before</th><th>after</th><th>gain</th></tr>{rows}</table>")
    body.append(f"<h2>Config</h2><pre>{html.escape((run_dir / 'config.yaml').read_text())}</pre>")
    evals = sorted((run_dir / "episodes").glob("eval_step*.parquet"))
    if evals:
        body.append(_transcripts(read_episodes(evals[-1]), transcripts, chars))
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    csp = f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{digest}'"
    page = (f'<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="{csp}">'
            f"<title>langgame report</title><style>{STYLE}</style></head><body>{''.join(body)}<script>{SCRIPT}</script></body></html>")
    path = run_dir / "report.html"
    write_atomic(path, page)
    return path
