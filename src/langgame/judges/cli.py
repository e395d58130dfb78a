"""`langgame judge ...`: train the harm judge and measure judges against pyrit's human labels.

    langgame judge train --out DIR [--seed S] [--steps N]
    langgame judge eval refusal
    langgame judge eval harm --dir DIR
    langgame judge eval llm [--model SPEC] [-n N] [--prefill TEXT]

Only metrics are printed, never the labelled (red-team) rows. The main CLI calls add_commands().
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table


def _table(title: str, metrics: dict[str, dict]) -> Table:
    table = Table("rows", "n", "positives", "accuracy", "precision", "recall", "F1", title=title)
    for name, m in metrics.items():
        values = [f"{m[k]:.3f}" if m["n"] else "-" for k in ("accuracy", "precision", "recall", "f1")]
        table.add_row(name, str(m["n"]), str(m["positives"]), *values)
    return table


def _held_out(metrics: dict) -> dict[str, dict]:
    rows = {k: v for k, v in metrics.items() if k in ("harm", "objective", "refusal", "overall")}
    rows.update({f"  {f}": m for f, m in metrics.get("per_file", {}).items()})
    return rows


def _train(args) -> None:
    from langgame.games.redteam import default_judge_dir
    from langgame.judges.harm import train_harm_judge

    args.out = args.out or default_judge_dir()
    if args.if_missing and (args.out / "judge.json").is_file():
        print(f"harm judge already trained: {args.out}")
        return

    console = Console(width=max(Console().width, 110))
    with console.status("embedding the labelled rows and training the head (the first run embeds ~1,800 texts)"):
        result = train_harm_judge(args.out, seed=args.seed, steps=args.steps)
    console.print(_table("harm judge, held-out objectives", _held_out(result.metrics)))
    console.print(f"train accuracy {result.metrics['train']['accuracy']:.3f}; saved to {result.directory} "
                  f"(head.safetensors, judge.json); load with HarmJudge.load({str(result.directory)!r})")


def _eval(args) -> None:
    console = Console(width=max(Console().width, 110))
    if args.judge == "refusal":
        from langgame.judges.refusal import evaluate_refusal

        result = evaluate_refusal()
        console.print(_table("refusal judge vs pyrit refusal labels (label 1 = refusal)",
                             {"overall": result["overall"], **{f"  {f}": m for f, m in result["per_file"].items()}}))
    elif args.judge == "harm":
        from langgame.judges.base import JudgeError
        from langgame.judges.harm import HarmJudge

        if args.dir is None:
            raise JudgeError("judge eval harm needs --dir DIR, a directory made by `langgame judge train --out DIR`")
        judge = HarmJudge.load(args.dir)
        console.print(_table(f"harm judge {args.dir}, held-out objectives", _held_out(judge.evaluate())))
    else:
        from langgame.judges.labelled import load_labelled, split
        from langgame.judges.llm_judge import LLMJudge, validate

        judge = LLMJudge(args.model, prefill=args.prefill.replace("\\n", "\n"))
        rows = split(load_labelled())[1]
        with console.status(f"{args.model} grading {args.n} held-out rows"):
            result = validate(judge, rows, n=args.n)
        console.print(_table(f"LLM judge {args.model} (StrongREJECT) vs human labels, score >= 0.5 = harmful/complied",
                             {"scored": result, **{f"  {k}": v for k, v in result["per_label_set"].items()}}))
        console.print(f"{result['rows']} rows, {result['unscored']} unparsable (score None), excluded from the metrics")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add `judge train` and `judge eval` to the main CLI's subparsers."""
    judge = subparsers.add_parser("judge", help="train and evaluate judges (reward models)")
    actions = judge.add_subparsers(dest="action", required=True)
    p = actions.add_parser("train", help="train the learned harm judge on pyrit's human-labelled rows")
    p.add_argument("--out", type=Path, help="directory for head.safetensors and judge.json (default: <LANGGAME_HOME>/judges/harm, "
                                            "where the redteam game looks)")
    p.add_argument("--if-missing", action="store_true", help="do nothing when --out already holds a trained judge")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=300, help="AdamW steps (batch 64)")
    p.set_defaults(func=_train)
    p = actions.add_parser("eval", help="agreement of a judge with pyrit's human labels")
    p.add_argument("judge", choices=["refusal", "harm", "llm"])
    p.add_argument("--dir", type=Path, help="trained harm judge directory (harm)")
    p.add_argument("--model", default="smollm2-135m-instruct", help="judge policy: shipped name, directory or hub id (llm)")
    p.add_argument("-n", type=int, default=60, help="held-out rows to grade (llm)")
    p.add_argument("--prefill", default="", help=r"start of the judge's answer, e.g. '#scores\n1.b' (llm)")
    p.set_defaults(func=_eval)
