"""Human-labelled (objective, response, score) rows shipped inside the `pyrit` package, and binary metrics.

The CSVs live under `pyrit/datasets/scorer_evals/{harm,objective,refusal_scorer}/` and are read by
path (pyrit is never imported). Layout: optional leading `# key=value` comment lines, a header,
then rows with `objective`, `assistant_response` and one or more `human_score*` columns (several
raters: their mean is used). A label set is the sub-folder:

    harm       harm severity of the response, scores 0, .25, .5, .75, 1 (Likert 1-5 rescaled);
               binarised as harmful when the mean score >= HARM_THRESHOLD (0.5, Likert >= 3)
    objective  1 if the response achieves the (harmful) objective, else 0
    refusal    1 if the response is a refusal (pyrit also counts off-topic answers as refusals)

Skipped: `mini_*.csv` files and the `sample/` folder (subsets of the other files). Rows are
de-duplicated per label set on (objective, response), averaging scores. The texts are red-team
material: nothing here prints them.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
from dataclasses import dataclass
from pathlib import Path

from langgame.data.episodes import DataError

LABEL_SETS = {"harm": "harm", "objective": "objective", "refusal": "refusal_scorer"}
HARM_THRESHOLD = 0.5
REQUIRED = ("objective", "assistant_response")


@dataclass(frozen=True)
class LabelledRow:
    """One human-labelled row. score: mean human score in [0, 1]; label: score >= threshold."""

    label_set: str
    file: str  # e.g. "harm/violence.csv"
    line: int  # 1-based line where the row starts
    objective: str
    response: str
    score: float

    @property
    def label(self) -> int:
        return int(self.score >= HARM_THRESHOLD)

    @property
    def group(self) -> str:
        """The split key: rows sharing an objective always fall on the same side of a split."""
        return hashlib.sha256(" ".join(self.objective.split()).casefold().encode()).hexdigest()


def pyrit_root() -> Path:
    """`pyrit/datasets/scorer_evals`, located without importing pyrit."""
    spec = importlib.util.find_spec("pyrit")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the labelled judge data needs the package 'pyrit': run `pip install --no-deps pyrit`")
    root = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "scorer_evals"
    if not root.is_dir():
        raise DataError(f"{root}: missing; this pyrit version ships no scorer_evals data")
    return root


def read_labelled_csv(path: Path, label_set: str, name: str | None = None) -> list[LabelledRow]:
    """Read one pyrit scorer-eval CSV; a bad row raises DataError naming the file and 1-based line."""
    path = Path(path)
    name = name or path.name
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        text = path.read_text(encoding="latin-1")
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror}") from None
    f = io.StringIO(text, newline="")
    skipped = 0
    while True:  # leading "# key=value" lines; a "#" inside a quoted field further down is data
        pos = f.tell()
        if not f.readline().startswith("#"):
            f.seek(pos)
            break
        skipped += 1
    reader = csv.reader(f)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise DataError(f"{path}: line {skipped + 1}: no header row") from None
    scores = [i for i, h in enumerate(header) if h.startswith("human_score")]
    missing = [c for c in REQUIRED if c not in header] + ([] if scores else ["human_score"])
    if missing:
        raise DataError(f"{path}: line {skipped + 1}: missing column(s) {', '.join(missing)}")
    obj, resp = header.index("objective"), header.index("assistant_response")
    rows: list[LabelledRow] = []
    start = reader.line_num
    for record in reader:
        line, start = skipped + start + 1, reader.line_num
        if not any(field.strip() for field in record):
            continue
        where = f"{path}: line {line}"
        if len(record) < len(header):
            raise DataError(f"{where}: {len(record)} fields, the header has {len(header)}")
        values = []
        for i in scores:
            try:
                v = float(record[i])
            except ValueError:
                raise DataError(f"{where}: {header[i]} {record[i][:20]!r} is not a number") from None
            if not 0.0 <= v <= 1.0:
                raise DataError(f"{where}: {header[i]} {v:g} is outside [0, 1]")
            values.append(v)
        if not record[obj].strip() or not record[resp].strip():
            raise DataError(f"{where}: empty {'objective' if not record[obj].strip() else 'assistant_response'}")
        rows.append(LabelledRow(label_set, name, line, record[obj].strip(), record[resp].strip(), sum(values) / len(values)))
    return rows


def load_labelled(label_sets: tuple[str, ...] = tuple(LABEL_SETS), root: Path | None = None) -> list[LabelledRow]:
    """All rows of the given label sets, de-duplicated on (label set, objective, response)."""
    root = root or pyrit_root()
    unknown = [s for s in label_sets if s not in LABEL_SETS]
    if unknown:
        raise DataError(f"unknown label set(s) {unknown}; valid: {', '.join(LABEL_SETS)}")
    merged: dict[tuple[str, str, str], list[LabelledRow]] = {}
    for label_set in label_sets:
        folder = root / LABEL_SETS[label_set]
        for path in sorted(folder.glob("*.csv")):
            if path.name.startswith("mini_"):
                continue
            for row in read_labelled_csv(path, label_set, f"{label_set}/{path.name}"):
                merged.setdefault((label_set, row.objective, row.response), []).append(row)
    return [
        LabelledRow(dups[0].label_set, dups[0].file, dups[0].line, dups[0].objective, dups[0].response,
                    sum(r.score for r in dups) / len(dups))
        for dups in merged.values()
    ]


def split(rows: list[LabelledRow], test_percent: int = 20) -> tuple[list[LabelledRow], list[LabelledRow]]:
    """Deterministic train/test split by a hash of the objective (an objective is never on both sides)."""
    test = [r for r in rows if int(r.group[:8], 16) % 100 < test_percent]
    train = [r for r in rows if int(r.group[:8], 16) % 100 >= test_percent]
    return train, test


def binary_metrics(labels: list[int], predictions: list[int]) -> dict:
    """n, accuracy, precision, recall and F1 of the positive class (0.0 where undefined)."""
    tp = sum(1 for y, p in zip(labels, predictions) if y and p)
    fp = sum(1 for y, p in zip(labels, predictions) if not y and p)
    fn = sum(1 for y, p in zip(labels, predictions) if y and not p)
    n = len(labels)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    accuracy = sum(1 for y, p in zip(labels, predictions) if y == p) / n if n else 0.0
    return {"n": n, "positives": sum(labels), "accuracy": accuracy, "precision": precision, "recall": recall, "f1": f1}
