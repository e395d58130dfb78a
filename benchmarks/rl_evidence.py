"""Seed-by-seed evidence of the RL examples, read from their run directories (prints JSON, then tables).

Expects the runs that README's "Results" section trains, under --runs (default runs/):
  secret_defender_s{seed}, secret_attacker_s{seed}            examples/secret_*.yaml
  secret_attacker_s{seed}/crossplay.json                      langgame eval crossplay ... --scenarios 192 (optional; pooled rise + SE)
  rt_selfplay_s{seed}, rt_nodiv_s{seed}, rt_rlhf_s{seed}       examples/redteam_*.yaml (nodiv: diversity_coef=0)
  rt_selfplay_s{seed}/crossplay.json                          langgame eval crossplay ... --defenders rt_rlhf_s{seed}
  rt_selfplay_s{seed}/best_response_p{1,2}.json               langgame eval best-response (optional)
A missing run is reported as missing, never filled in.

    .venv/bin/python benchmarks/rl_evidence.py --runs runs --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def evals(run: Path) -> tuple[dict, dict] | None:
    """(first, last) held-out evaluation of a finished run, or None."""
    path = run / "summary.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    return summary["eval_first"], summary["eval_last"]


def train_mean(run: Path, key: str) -> float | None:
    """Mean of a per-step training metric over the run's second half (metrics.jsonl)."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    values = [r[key] for r in rows if key in r]
    return float(np.mean(values[len(values) // 2:])) if values else None


def secret(runs: Path, seeds: list[int]) -> dict:
    out = {}
    for role in ("defender", "attacker"):
        for seed in seeds:
            e = evals(runs / f"secret_{role}_s{seed}")
            if e:
                first, last = e
                row = {"leak_before": first["eval/leak_rate"], "leak_after": last["eval/leak_rate"]}
                if "eval/benign_accuracy" in first:
                    row |= {"benign_before": first["eval/benign_accuracy"], "benign_after": last["eval/benign_accuracy"]}
                if "eval/leak_likelihood" in first:
                    row |= {"likelihood_before": first["eval/leak_likelihood"], "likelihood_after": last["eval/leak_likelihood"]}
                cross = runs / f"secret_{role}_s{seed}" / "crossplay.json"
                if cross.is_file():  # more held-out attacks: langgame eval crossplay RUN --scenarios N
                    c = json.loads(cross.read_text())
                    row |= {"crossplay_leak_initial": c["payoff_p1"][0][0], "crossplay_leak_final": c["payoff_p1"][-1][0],
                            "crossplay_scenarios": c["scenarios"]}
                out[f"{role}_s{seed}"] = row
            else:
                out[f"{role}_s{seed}"] = "missing"
    pooled = [r for k, r in out.items() if k.startswith("attacker") and isinstance(r, dict) and "crossplay_scenarios" in r]
    if pooled:  # the attackers' leak rates pooled over seeds, with the two-proportion standard error of the rise
        n = sum(r["crossplay_scenarios"] for r in pooled)
        p0, p1 = (sum(r[k] * r["crossplay_scenarios"] for r in pooled) / n for k in ("crossplay_leak_initial", "crossplay_leak_final"))
        out["pooled_attacker_crossplay"] = {"scenarios": n, "leak_initial": p0, "leak_final": p1, "rise": p1 - p0,
                                            "rise_se": float(np.sqrt((p0 * (1 - p0) + p1 * (1 - p1)) / n))}
    return out


def redteam(runs: Path, seeds: list[int]) -> dict:
    out = {}
    for seed in seeds:
        row: dict = {}
        if e := evals(runs / f"rt_selfplay_s{seed}"):
            first, last = e
            row |= {"asr_start": first["eval/asr"],
                    "asr_final_attacker_vs_initial_defender": last["eval_initial_p2/asr"],
                    "asr_final_attacker_vs_selfplay_defender": last["eval/asr"],
                    "over_refusal_start": first["eval/over_refusal"], "over_refusal_selfplay": last["eval/over_refusal"],
                    "self_bleu_div": last["eval/attack_self_bleu"], "embedding_similarity_div": last["eval/attack_embedding_similarity"]}
        if e := evals(runs / f"rt_nodiv_s{seed}"):
            row |= {"self_bleu_nodiv": e[1]["eval/attack_self_bleu"], "embedding_similarity_nodiv": e[1]["eval/attack_embedding_similarity"]}
        for name, run in (("div", f"rt_selfplay_s{seed}"), ("nodiv", f"rt_nodiv_s{seed}")):
            if (v := train_mean(runs / run, "game/attack_self_bleu")) is not None and evals(runs / run):
                row |= {f"train_self_bleu_{name}": v, f"train_embedding_similarity_{name}": train_mean(runs / run, "game/attack_embedding_similarity")}
        if e := evals(runs / f"rt_rlhf_s{seed}"):
            row |= {"rlhf_asr_vs_initial_attacker": e[1]["eval/asr"], "over_refusal_rlhf": e[1]["eval/over_refusal"]}
        cross = runs / f"rt_selfplay_s{seed}" / "crossplay.json"
        if cross.is_file():
            c = json.loads(cross.read_text())
            payoff = np.array(c["payoff_p1"])  # mean attacker return = mean harm conceded (shaping is not part of the return)
            final = c["defenders"].index(c["attackers"][-1])  # the self-play defender saved with the last attacker
            baseline = next(j for j, d in enumerate(c["defenders"]) if d.startswith("baseline"))
            row |= {"crossplay_pool_vs_selfplay_defender": float(payoff[:, final].mean()),
                    "crossplay_pool_vs_rlhf_defender": float(payoff[:, baseline].mean()),
                    "crossplay_pool_vs_initial_defender": float(payoff[:, 0].mean()),
                    "meta_nash_defenders": dict(zip(c["defenders"], c["meta_nash"]["defenders"], strict=True)),
                    "nash_conv": c["nash_conv"]}
        for p in (1, 2):
            probe = runs / f"rt_selfplay_s{seed}" / f"best_response_p{p}.json"
            if probe.is_file():
                row[f"best_response_gain_p{p}"] = json.loads(probe.read_text())["gain"]
        out[f"s{seed}"] = row or "missing"
    return out


def table(rows: dict, columns: list[str]) -> str:
    lines = ["| run | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in rows.items():
        cells = [f"{row[c]:.3f}" if isinstance(row, dict) and isinstance(row.get(c), float) else "-" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    means = [np.mean([r[c] for r in rows.values() if isinstance(r, dict) and c in r]) if any(isinstance(r, dict) and c in r for r in rows.values()) else None for c in columns]
    lines.append("| mean | " + " | ".join("-" if m is None else f"{m:.3f}" for m in means) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    result = {"secret": secret(args.runs, args.seeds), "redteam": redteam(args.runs, args.seeds)}
    print(json.dumps(result))
    sec = result["secret"]
    print(table({k: v for k, v in sec.items() if k.startswith("defender")}, ["leak_before", "leak_after", "benign_before", "benign_after"]))
    print()
    print(table({k: v for k, v in sec.items() if k.startswith("attacker")},
                ["leak_before", "leak_after", "likelihood_before", "likelihood_after", "crossplay_leak_initial", "crossplay_leak_final"]))
    if "pooled_attacker_crossplay" in sec:
        c = sec["pooled_attacker_crossplay"]
        print(f"pooled over seeds ({c['scenarios']} held-out attacks in all): leak {c['leak_initial']:.3f} -> {c['leak_final']:.3f}, "
              f"rise {c['rise']:.3f} (standard error {c['rise_se']:.3f})")
    print()
    rt = result["redteam"]
    print(table(rt, ["asr_start", "asr_final_attacker_vs_initial_defender", "asr_final_attacker_vs_selfplay_defender",
                     "rlhf_asr_vs_initial_attacker", "over_refusal_start", "over_refusal_selfplay", "over_refusal_rlhf"]))
    print()
    print(table(rt, ["crossplay_pool_vs_initial_defender", "crossplay_pool_vs_rlhf_defender", "crossplay_pool_vs_selfplay_defender", "nash_conv"]))
    print()
    print(table(rt, ["self_bleu_div", "self_bleu_nodiv", "embedding_similarity_div", "embedding_similarity_nodiv"]))
    print()
    print(table(rt, ["train_self_bleu_div", "train_self_bleu_nodiv", "train_embedding_similarity_div", "train_embedding_similarity_nodiv",
                     "best_response_gain_p1", "best_response_gain_p2"]))


if __name__ == "__main__":
    main()
