"""Mixture of games (paper 4.5, eq. 10): one shared policy on several OpenSpiel games vs single-game specialists.

Arms (examples/mixture_spiel.yaml with these edits; one run per arm and seed, in --out/<arm>_seed<seed>):
  mixture          the yaml: one shared model on all its games, REINFORCE with a per-(game, role) baseline
  mixture_global   the same with one baseline per role over the whole batch (algo.baseline=batch)
  <game>           a specialist on that game alone (e.g. kuhn_poker), with scenarios_per_step / (number of games)
                   episodes per step: after the same steps it has played as many episodes of its game as the
                   mixture has on average (equal samples per game)
For every game and arm, at the first and the last evaluation, mean ± std over seeds: the exact exploitability of the
policy on legal replies and of the policy as played (illegal replies play the fallback), and the probability of a
legal reply (games/openspiel.py). A run whose summary.json exists is reused;
--overwrite reruns it. Prints one JSON object, then a Markdown table; writes --out/results.json and
--out/exploitability.png (exploitability vs episodes of that game, per game).

    .venv/bin/python benchmarks/mixture_games.py --smoke --out /tmp/mixture_smoke   # end to end, tiny-random
    .venv/bin/python benchmarks/mixture_games.py --seeds 0 1 2 --out runs/mixture_bench
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from arms import add_arguments, base_config, fmt, run_arms, stats
from langgame.config import RLConfig, load_yaml, validate
from langgame.metrics import read_metrics

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mixture_spiel.yaml"
MIXTURES = ("mixture", "mixture_global")


def games_of(raw: dict) -> list[str]:
    return [c["options"]["game"] for c in raw["game"]["options"]["games"]]


def config(arm: str, seed: int, args: argparse.Namespace) -> RLConfig:
    raw = base_config(EXAMPLE, arm, seed, args)
    for p in ("player1", "player2"):
        raw[p]["policy"] = {"model": args.model} if args.model else raw[p]["policy"]
    components = raw["game"]["options"]["games"]
    raw["eval_initial"] = False  # exploitability is of the current policy; the initial one is step 0's
    for c in components:
        c["options"].update(text=args.text) if args.text else None
    if arm == "mixture_global":
        raw["algo"]["baseline"] = "batch"
    elif arm not in MIXTURES:
        raw["game"] = next(c for c in components if c["options"]["game"] == arm)
        raw["game"].pop("weight", None)
        raw["scenarios_per_step"] = max(1, raw["scenarios_per_step"] // len(components))
    return validate(RLConfig, raw, f"{EXAMPLE} (arm {arm})")


def summarize(arm: str, run_dir: Path) -> dict:
    """Per game: [{step, episodes, exploitability, exploitability_played, legal}] at every evaluation (episodes of that game played before it)."""
    games = games_of(load_yaml(EXAMPLE))
    rows, played, out = read_metrics(run_dir), {g: 0.0 for g in games}, {g: [] for g in games}
    spp = load_yaml(run_dir / "config.yaml")["scenarios_per_step"]
    for r in rows:
        prefix = lambda g: "" if arm not in MIXTURES else f"{g}/"  # noqa: E731
        for g in games if arm in MIXTURES else [arm]:
            if f"eval/{prefix(g)}exploitability" in r:
                legal = np.mean([r.get(f"eval/{prefix(g)}legal_p{p}", np.nan) for p in (1, 2)])
                out[g].append({"step": r["step"], "episodes": played[g], "exploitability": r[f"eval/{prefix(g)}exploitability"],
                               "exploitability_played": r[f"eval/{prefix(g)}exploitability_played"], "legal": float(legal)})
            if "reward/p1" in r:
                share = r.get(f"game/{g}/share", 0.0) if arm in MIXTURES else 1.0
                played[g] += share * spp
    return {g: v for g, v in out.items() if v}


def plot(runs: dict, games: list[str], path: Path) -> None:
    fig, axes = plt.subplots(1, len(games), figsize=(4.5 * len(games), 3.5), squeeze=False)
    for ax, g in zip(axes[0], games):
        for arm, seeds in runs.items():
            curves = [s[g] for s in seeds.values() if g in s]
            if curves:
                n = min(len(c) for c in curves)
                ax.plot([c["episodes"] for c in curves[0][:n]], np.mean([[c["exploitability"] for c in curve[:n]] for curve in curves], 0),
                        marker="o", label="specialist" if arm == g else arm)
        ax.set(title=g, xlabel=f"episodes of {g}", ylabel="exploitability (mean over seeds)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arms", nargs="+", help="default: mixture, mixture_global and one specialist per game")
    parser.add_argument("--model", help="both seats' model (default: the yaml's)")
    parser.add_argument("--text", choices=["full", "compact"], help="the games' text (default: the yaml's)")
    add_arguments(parser, "runs/mixture_bench")  # --scenarios-per-step: the mixture's; a specialist plays it / number of games
    parser.add_argument("--smoke", action="store_true", help="tiny-random, compact text, 2 steps, 1 seed")
    args = parser.parse_args()
    if args.smoke:
        args.model, args.text, args.max_steps, args.eval_every, args.eval_scenarios = "tiny-random", "compact", 2, 2, 6
    games = games_of(load_yaml(EXAMPLE))
    arms = args.arms or [*MIXTURES, *games]
    runs = run_arms(arms, args, config, summarize)
    results = {g: {arm: {k: {"first": stats([s[g][0][k] for s in seeds.values()]), "last": stats([s[g][-1][k] for s in seeds.values()])}
                         for k in ("exploitability", "exploitability_played", "legal")}
                   for arm, seeds in runs.items() if all(g in s for s in seeds.values())}
               for g in games}
    (args.out / "results.json").write_text(json.dumps({"results": results, "runs": runs}, indent=1))
    plot(runs, games, args.out / "exploitability.png")
    print(json.dumps(results))
    f = fmt
    print("\n| game | arm | seeds | exploitability on legal replies: first | last | as played: first | last "
          "| legal reply probability: first | last |\n|---|---|---|---|---|---|---|---|---|")
    for g, arms_of in results.items():
        for arm, r in arms_of.items():
            cells = " | ".join(f(r[k][w]) for k in ("exploitability", "exploitability_played", "legal") for w in ("first", "last"))
            print(f"| {g} | {'specialist' if arm == g else arm} | {r['legal']['last']['n']} | {cells} |")


if __name__ == "__main__":
    main()
