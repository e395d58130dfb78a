"""`langgame`: the command line. User errors print one line (`error: ...`) and exit with status 2."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from langgame import __version__
from langgame.errors import LanggameError


def _models_prepare(args) -> None:
    from langgame.models import prepare_shipped

    path = prepare_shipped(args.name, force=args.force)
    print(f"{args.name}: {path}")


def _models_list(args) -> None:
    from langgame.models import SHIPPED, TINY_RANDOM, langgame_home

    for name in SHIPPED:
        cached = (langgame_home() / "models" / name / "langgame.json").is_file()
        print(f"{name}\tshipped\t{'cached' if cached else 'not prepared (langgame models prepare ' + name + ')'}")
    print(f"{TINY_RANDOM}\tbuilt locally, for tests")


def _data_prepare(args) -> None:
    from langgame.data.episodes import write_episodes
    from langgame.data.prepare import prepare

    episodes, summary = prepare(args.inputs, args.format, skip_invalid=args.skip_invalid, regex=args.regex, game=args.game)
    write_episodes(args.out, episodes)
    print(f"{args.out}: {summary.episodes} episodes from {summary.files} file(s); skipped {summary.skipped} invalid")
    for example in summary.skipped_examples:
        print(f"  skipped {example}")


def _data_synth(args) -> None:
    from langgame.data.episodes import write_episodes
    from langgame.data.synth import synth_episodes

    common = {"turns": args.turns, "thoughts": not args.no_thoughts, "tasks": args.tasks}
    train = synth_episodes(args.train, args.seed, **common)
    seen = {t.text for e in train for t in e.turns if t.player == 1}
    held_out = [e for e in synth_episodes(args.eval, args.seed + 10_000, **common) if not seen & {t.text for t in e.turns}]
    for name, episodes in (("train", train), ("eval", held_out)):
        print(f"{write_episodes(args.out / f'{name}.parquet', episodes)}: {len(episodes)} episodes")


def _data_unlearn(args) -> None:
    from langgame.data.episodes import read_episodes
    from langgame.games.unlearn import write_data

    for path in write_data(args.out, args.n_forget, args.n_retain, args.fact_seed, args.n_unknown).values():
        print(f"{path}: {len(read_episodes(path))} episodes")


def _data_babyai(args) -> None:
    from langgame.config import validate
    from langgame.data.episodes import read_episodes
    from langgame.games.babyai import BabyAIGame, write_data

    if not 0 <= args.explore <= 1:
        raise LanggameError(f"--explore: a probability in [0, 1], got {args.explore}")
    options = validate(BabyAIGame.Options, {"level": args.level, "hint_every": args.hint_every}, "langgame data babyai")
    for path in write_data(args.out, options, args.episodes, args.eval_episodes, args.seed, args.explore).values():
        episodes = read_episodes(path)
        print(f"{path}: {len(episodes)} episodes, {sum(t.player == 1 for e in episodes for t in e.turns)} hints")


def _data_show(args) -> None:
    from rich.console import Console
    from rich.text import Text

    from langgame.data.episodes import read_episodes
    from langgame.models import load_policy

    policy = load_policy(args.model)
    styles = {0: "dim", 1: "cyan", 2: "green"}
    console = Console()
    for e in read_episodes(args.file, args.n):
        r = policy.render(e, viewer=args.viewer)
        text = Text()
        for tok, owner in zip(r.ids, r.owner):
            text.append(policy.tokenizer.decode([int(tok)]), style=styles[int(owner)])
        console.rule(f"{e.id}  R={e.returns()}  tokens p1={int((r.owner == 1).sum())} p2={int((r.owner == 2).sum())}")
        console.print(text)
    console.print("legend: [dim]context/template (player 0)[/] [cyan]player 1[/] [green]player 2[/]")


def _train(args) -> None:
    from langgame.config import ConfigError, load_train_config
    from langgame.loop import drive

    overrides = list(args.set) + ([f"run_dir={args.run_dir}"] if args.run_dir else [])
    cfg = load_train_config(args.config, overrides)
    if args.address is not None and (cfg.stage != "rl" or cfg.engine != "ray"):
        raise ConfigError(f"--address {args.address}: joining a Ray cluster needs stage: rl with engine: ray (e.g. --set engine=ray)")
    if cfg.stage == "rl":
        from functools import partial

        from langgame.rl import RLRun

        Run = partial(RLRun, address=args.address)
    elif cfg.stage == "selfplay":
        from langgame.selfplay import SelfPlay as Run
    else:
        from langgame.train import BCRun as Run
    run_dir = drive(Run, cfg, resume=args.resume, overwrite=args.overwrite)
    print(f"run directory: {run_dir}\n  final policy: {run_dir / 'final'}\n  metrics: {run_dir / 'metrics.jsonl'}"
          f" (TensorBoard: {run_dir / 'tb'})\n  summary: {run_dir / 'summary.json'}")


def _summary(args) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 110))
    for run in args.runs:
        path = run / "summary.json"
        if not path.is_file():
            raise LanggameError(f"{path}: no summary (is {run} a finished run directory?)")
        s = json.loads(path.read_text())
        first, last = s.get("eval_first", {}), s.get("eval_last", {})
        header = ", ".join(f"{k} {v}" for k, v in s.items() if k not in ("eval_first", "eval_last"))
        table = Table("metric", f"first (step {first.get('step', '-')})", f"last (step {last.get('step', '-')})", title=f"{run}: {header}")
        for key in [k for k in last if k != "step" and (args.match is None or args.match in k)]:
            table.add_row(key, f"{first.get(key, float('nan')):.4f}", f"{last[key]:.4f}")
        console.print(table)


def _eval_exploitability(args) -> None:
    import json

    import yaml
    from rich.console import Console
    from rich.table import Table

    from langgame.config import SelfPlayConfig, validate
    from langgame.equilibrium import evaluate_policy_dir, exploitability_curve

    if args.model:  # one policy playing both seats
        report = evaluate_policy_dir(args.game, args.model)
        print(json.dumps(report))
        return
    if args.run_dir is None:
        raise LanggameError("eval exploitability: give a selfplay RUN_DIR, or --model SPEC (with --game)")
    path = args.run_dir / "config.yaml"
    if not path.is_file():
        raise LanggameError(f"{path}: not a run directory (no config.yaml)")
    cfg = validate(SelfPlayConfig, yaml.safe_load(path.read_text()), str(path))
    rows, plot = exploitability_curve(args.run_dir, cfg)
    table = Table("checkpoint", "step", "exploitability", "NashConv", title=f"{cfg.game}: exploitability of saved policies")
    for r in rows:
        table.add_row(r["checkpoint"], str(r["step"]), f"{r['exploitability']:.4f}", f"{r['nash_conv']:.4f}")
    Console().print(table)
    print(json.dumps(rows))
    print(f"plot: {plot}")


def _report(args) -> None:
    from langgame.report import write_report

    print(f"report: {write_report(args.run_dir, args.transcripts)}")


def _eval_crossplay(args) -> None:
    from langgame.crossplay import cross_play

    result = cross_play(args.run_dir, args.defenders, args.scenarios)
    print(json.dumps({k: result[k] for k in ("attackers", "defenders", "payoff_p1", "meta_nash", "nash_conv")}))
    print(f"written: {args.run_dir / 'crossplay.json'}")


def _eval_best_response(args) -> None:
    from langgame.crossplay import best_response

    print(json.dumps(best_response(args.run_dir, args.player, args.steps)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="langgame",
        description="Train language models as players in two-player language games.",
    )
    parser.add_argument("--version", action="version", version=f"langgame {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    models = sub.add_parser("models", help="prepare and list policies").add_subparsers(dest="action", required=True)
    p = models.add_parser("prepare", help="convert a shipped model into the local cache (once)")
    p.add_argument("name", nargs="?", default="smollm2-135m-instruct")
    p.add_argument("--force", action="store_true", help="rebuild the cache even if present")
    p.set_defaults(func=_models_prepare)
    models.add_parser("list", help="list known models").set_defaults(func=_models_list)

    data = sub.add_parser("data", help="turn raw logs into episode files (Parquet)").add_subparsers(dest="action", required=True)
    p = data.add_parser("prepare", help="convert chat JSONL or text documents into episodes")
    p.add_argument("inputs", nargs="+", type=Path)
    p.add_argument("--format", default="auto", choices=["auto", "chat", "qa", "heading", "regex"],
                   help="chat: JSONL with OpenAI-style messages; qa: Q:/C:/A: line markers; heading: markdown "
                        "heading = question, body = answer; regex: --regex with groups question, answer[, thought]")
    p.add_argument("--regex", help="for --format regex")
    p.add_argument("--out", type=Path, required=True, help="output .parquet")
    p.add_argument("--game", default="", help="game name stored on every episode (default: the format)")
    p.add_argument("--skip-invalid", action="store_true", help="skip malformed rows and count them instead of failing")
    p.set_defaults(func=_data_prepare)
    p = data.add_parser("synth", help="generate question-answer dialogues with checkable answers (reasoning-gym)")
    p.add_argument("--out", type=Path, required=True, help="directory for train.parquet and eval.parquet")
    p.add_argument("--train", type=int, default=512, help="training episodes")
    p.add_argument("--eval", type=int, default=128, help="held-out episodes (questions never in train)")
    p.add_argument("--turns", type=int, default=2, help="question-answer rounds per episode")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-thoughts", action="store_true", help="Q-A logs instead of Q-C-A logs")
    p.add_argument("--tasks", nargs="+", help="reasoning-gym tasks to mix (default: all supported)")
    p.set_defaults(func=_data_synth)
    p = data.add_parser("unlearn", help="the invented facts of game unlearn as episodes: teach (all facts), teach_eval (held-out "
                                         "phrasings), gradient_ascent (forget facts with reward -1, retain +1), idk (forget facts "
                                         "answered \"I don't know.\", retain facts answered), relearn (half the forget facts)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--n-forget", type=int, default=10, help="facts to forget (the game's option n_forget)")
    p.add_argument("--n-retain", type=int, default=10, help="facts to keep (the game's option n_retain)")
    p.add_argument("--fact-seed", type=int, default=0, help="seed of the invented facts (the game's option fact_seed)")
    p.add_argument("--n-unknown", type=int, default=0, help="towns with no fact, taught to answer \"I don't know.\" (a defender "
                                                            "that can refuse, for the game's option refusal_reward)")
    p.set_defaults(func=_data_unlearn)
    p = data.add_parser("babyai", help="BabyAIBot's hints as the BabyAI teacher's chats (hints, hints_eval): behaviour-cloning "
                                        "data of an optimal teacher, for a stage-sft warm start (examples/babyai_teacher_sft.yaml)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--level", default="BabyAI-GoToRedBallNoDists-v0", help="BabyAI level (the game's option level)")
    p.add_argument("--hint-every", type=int, default=8, help="student steps between hints (the game's option hint_every)")
    p.add_argument("--episodes", type=int, default=1024, help="episodes on training level instances (even seeds)")
    p.add_argument("--eval-episodes", type=int, default=128, help="episodes on held-out level instances (odd seeds)")
    p.add_argument("--explore", type=float, default=0.5, help="probability that the student turns or moves at random instead "
                                                              "of following the bot (scenes off the bot's path)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_data_babyai)
    p = data.add_parser("show", help="print episodes with every token coloured by its owner P(s_t)")
    p.add_argument("file", type=Path)
    p.add_argument("-n", type=int, default=3, help="episodes to show")
    p.add_argument("--model", default="smollm2-135m-instruct", help="whose tokenizer and chat template")
    p.add_argument("--viewer", type=int, default=2, choices=[1, 2], help="render from this player's view")
    p.set_defaults(func=_data_show)

    p = sub.add_parser("train", help="train from a YAML config (stage: pretrain | sft | rl | selfplay)")
    p.add_argument("config", type=Path)
    p.add_argument("--run-dir", help="override run_dir")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty run directory")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. optim.lr=1e-4")
    p.add_argument("--address", help="engine: ray: join this Ray cluster (ray://host:port, host:port or auto) instead of "
                                     "starting Ray here; the run directory must be on a filesystem its nodes share")
    p.set_defaults(func=_train)

    p = sub.add_parser("summary", help="first and last held-out evaluation of finished runs")
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--match", help="only metrics whose name contains this text, e.g. nll or asr")
    p.set_defaults(func=_summary)

    from langgame.judges.cli import add_commands

    add_commands(sub)

    evaluate = sub.add_parser("eval", help="evaluate a run").add_subparsers(dest="what", required=True)
    p = evaluate.add_parser("exploitability", help="exact exploitability of every checkpoint of a selfplay run, and a plot; "
                            "or of one policy (--model) playing both seats")
    p.add_argument("run_dir", type=Path, nargs="?")
    p.add_argument("--model", help="a policy (shipped name, directory, tiny-random) instead of a run directory")
    p.add_argument("--game", default="kuhn_poker", help="with --model: the OpenSpiel game (default kuhn_poker)")
    p.set_defaults(func=_eval_exploitability)
    p = evaluate.add_parser("crossplay", help="payoff matrix between an rl run's saved attackers and defenders, meta-Nash, NashConv")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--defenders", nargs="*", type=Path, default=[], help="other runs whose final defender joins the matrix (e.g. an RLHF baseline)")
    p.add_argument("--scenarios", type=int, help="held-out scenarios per cell (default: the run's eval_scenarios)")
    p.set_defaults(func=_eval_crossplay)
    p = evaluate.add_parser("best-response", help="train a fresh player against the other's frozen final policy: approximate exploitability")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--player", type=int, choices=[1, 2], required=True, help="the player to train afresh")
    p.add_argument("--steps", type=int, default=10)
    p.set_defaults(func=_eval_best_response)

    p = sub.add_parser("report", help="write a self-contained HTML report of a run (report.html in the run directory)")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--transcripts", type=int, default=12, help="episodes shown from the last evaluation")
    p.set_defaults(func=_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        args.func(args)
    except LanggameError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
