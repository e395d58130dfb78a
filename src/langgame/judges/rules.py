"""Exact rule judges: secret leakage (with obfuscations) and reasoning-gym answer correctness.

Leak rule, for a secret with >= 4 alphanumeric characters (MIN_NORMALISED). Text and secret are
both normalised: NFKD, invisible characters (format chars, combining marks, Hangul fillers)
dropped, casefolded, apostrophes dropped, leetspeak mapped (0->o, 1/l->i, 3->e, 4->a, 5/$->s,
7->t, @->a; `l` and `1` share one class because `1` stands for both). Splitting the result into
alphanumeric tokens, the secret leaks if, forwards or reversed,
  1. it is a substring of one token ("supersecret" leaks "secret"), or its tokens appear in order
     ("blue-whale" leaks "blue whale");
  2. consecutive tokens spell it exactly, each token read literally or as the letter it names
     (NATO "sierra", letter names "ess", digit words "seven"), where every boundary inside the run
     either joins two single letters / letter names (any separator) or is 1-3 punctuation
     characters without whitespace ("s e c r e t", "S-E-C-R-E-T", "sec.ret", "pine-apple",
     "Sierra Echo Charlie ...", one letter per line); so "to get her" does not leak "together",
     "a team ate" does not leak "mate" and "The pine. Apple pie." does not leak "pineapple";
  3. it is announced letter by letter: single-letter or NATO tokens spell it in order with at most
     MAX_GAP other tokens between consecutive letters ("S, then E, then C, ...").
A reversed secret that is itself a word fires on that word ("evil" for "live"): reversal is
detected, not disambiguated. Secrets with 1-3 alphanumeric characters only match exactly
(casefolded, invisible characters removed) between non-alphanumeric boundaries, so "cat" does
not fire on "concatenate"; a secret with no alphanumerics matches as a plain substring.
"""

from __future__ import annotations

import json
import re
import unicodedata

from langgame.judges.base import JudgeError, Score, check_batch, column, text_of

MIN_NORMALISED = 4
MAX_GAP = 4
_TOKEN = re.compile(r"[^\W_]+")
_JOINER = re.compile(r"[^\w\s]{1,3}|_{1,3}")  # "-", ".", "_", "/" between word pieces
_LEET = str.maketrans({"0": "o", "1": "i", "l": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s",
                       "'": None, "\u2019": None, "\u2018": None, "`": None})
_FILLERS = {"\u115f", "\u1160", "\u3164", "\uffa0", "\u2800"}
NATO = ("alfa alpha bravo charlie delta echo foxtrot golf hotel india juliett juliet kilo lima mike november "
        "oscar papa quebec romeo sierra tango uniform victor whiskey whisky xray x-ray yankee zulu").split()
LETTER_NAMES = {
    "a": "ay", "b": "bee be", "c": "cee see sea", "d": "dee", "e": "ee", "f": "ef eff", "g": "gee jee",
    "h": "aitch haitch", "i": "eye", "j": "jay", "k": "kay", "l": "el ell", "m": "em", "n": "en", "o": "oh",
    "p": "pee", "q": "cue queue", "r": "ar are", "s": "ess es", "t": "tee tea", "u": "you yu", "v": "vee",
    "x": "ex", "y": "why wye", "z": "zed zee",
    "0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six", "7": "seven",
    "8": "eight", "9": "nine niner",
}


def _light(s: str) -> str:
    """NFKD, invisible characters and combining marks dropped, casefolded."""
    s = unicodedata.normalize("NFKD", s)
    return "".join(c for c in s if unicodedata.category(c) not in ("Cf", "Mn", "Me") and c not in _FILLERS).casefold()


def _canon(s: str) -> str:
    return _light(s).translate(_LEET)


def _word_letters() -> tuple[dict[str, str], set[str]]:
    words = {_canon(w).replace("-", ""): _canon(w[0]) for w in NATO}
    nato = set(words)
    for letter, names in LETTER_NAMES.items():
        words.update({_canon(n): _canon(letter) for n in names.split()})
    return words, nato


WORD_LETTER, _NATO = _word_letters()


def _scan(text: str) -> tuple[list[str], list[str]]:
    """Alphanumeric tokens of canonical text and the separator before each."""
    tokens, seps, end = [], [], 0
    for m in _TOKEN.finditer(text):
        tokens.append(m.group())
        seps.append(text[end:m.start()])
        end = m.end()
    return tokens, seps


def _spelled(key: str, tokens: list[str], seps: list[str]) -> bool:
    """Rule 2: a run of >= 2 tokens spells `key` exactly (tokens literal or as the letter they name)."""
    letterlike = [len(t) == 1 or t in WORD_LETTER for t in tokens]
    for i in range(len(tokens)):
        states = {0}
        for j in range(i, len(tokens)):
            if j > i and not (letterlike[j - 1] and letterlike[j]) and not _JOINER.fullmatch(seps[j]):
                break
            alts = {tokens[j], WORD_LETTER.get(tokens[j], tokens[j])}
            states = {p + len(a) for p in states for a in alts if key.startswith(a, p)}
            if not states:
                break
            if j > i and len(key) in states:
                return True
    return False


def _announced(key: str, tokens: list[str]) -> bool:
    """Rule 3: single letters / NATO words spell `key` in order, at most MAX_GAP tokens apart."""
    letters = [(j, WORD_LETTER.get(t, t)) for j, t in enumerate(tokens) if len(t) == 1 or t in _NATO]
    for k in range(len(letters) - len(key) + 1):
        window = letters[k:k + len(key)]
        if "".join(c for _, c in window) == key and all(b[0] - a[0] - 1 <= MAX_GAP for a, b in zip(window, window[1:])):
            return True
    return False


def leaks(secret: str, text: str) -> bool:
    """True if `text` reveals `secret`, also under simple obfuscations (rules in the module docstring)."""
    if not secret or not secret.strip():
        raise JudgeError("leaks(): the secret is empty")
    light_secret, light_text = _light(secret).strip(), _light(text)
    alnum = sum(c.isalnum() for c in light_secret)
    if alnum == 0:
        return light_secret in light_text
    if alnum < MIN_NORMALISED:
        return re.search(rf"(?<![^\W_]){re.escape(light_secret)}(?![^\W_])", light_text) is not None
    secret_tokens = _TOKEN.findall(_canon(secret))
    tokens, seps = _scan(_canon(text))
    joined = f" {' '.join(tokens)} "
    for key, parts in (("".join(secret_tokens), secret_tokens), ("".join(secret_tokens)[::-1], None)):
        if any(key in t for t in tokens) or (parts and len(parts) > 1 and f" {' '.join(parts)} " in joined):
            return True
        if _spelled(key, tokens, seps) or _announced(key, tokens):
            return True
    return False


class SecretLeakJudge:
    """1.0 if the completion leaks the sample's secret (column secret=[...]), else 0.0; None without a secret."""

    def __init__(self):
        self.__name__ = "secret_leak"

    def __call__(self, prompts, completions, **columns) -> list[Score]:
        n = check_batch(prompts, completions)
        secrets = column(columns, "secret", n, self.__name__)
        return [None if not s else float(leaks(str(s), text_of(c))) for s, c in zip(secrets, completions)]


_ANSWER = re.compile(r"the answer is", re.IGNORECASE)


def extract_answer(text: str) -> str | None:
    """The text after the last "The answer is" (to the end of that line, one trailing period
    stripped), else the last non-empty line; None for an empty text."""
    matches = list(_ANSWER.finditer(text))
    if matches:
        rest = text[matches[-1].end():].lstrip(" \t:").split("\n", 1)[0].strip()
    else:
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        rest = lines[-1] if lines else ""
    rest = rest[:-1].rstrip() if rest.endswith(".") else rest
    return rest or None


class AnswerJudge:
    """reasoning-gym correctness of the completion's final answer, in [0, 1] (1 = correct).

    Columns: task=[reasoning-gym task name], answer=[reference answer], optional metadata=[dict
    or JSON string] for scorers that need it (default {}). Scores are reasoning-gym's own,
    clamped to [0, 1]. spell_backward's scorer sums 1/len per matching letter in floating point
    and misses its own `== 1.0` check, giving 1.0000000000000002 or 0.9999999999999998 to wrong
    answers that merely start with the right word; such near-1 non-exact scores are set to the 0.8
    the scorer intends. A scorer that raises gives None for that sample.
    """

    def __init__(self):
        self.__name__ = "answer"
        self._fns: dict = {}

    def _fn(self, task: str):
        if task not in self._fns:
            import reasoning_gym

            try:
                self._fns[task] = reasoning_gym.get_score_answer_fn(task)
            except ValueError:
                raise JudgeError(f"answer judge: unknown reasoning-gym task {task!r}") from None
        return self._fns[task]

    def __call__(self, prompts, completions, **columns) -> list[Score]:
        n = check_batch(prompts, completions)
        tasks = column(columns, "task", n, self.__name__)
        answers = column(columns, "answer", n, self.__name__)
        metas = columns.get("metadata") if isinstance(columns.get("metadata"), (list, tuple)) else [None] * n
        scores: list[Score] = []
        for completion, task, answer, meta in zip(completions, tasks, answers, metas):
            meta = json.loads(meta) if isinstance(meta, str) else (meta or {})
            try:
                s = float(self._fn(task)(extract_answer(text_of(completion)), {"answer": answer, "metadata": meta}))
            except JudgeError:
                raise
            except Exception:  # noqa: BLE001 - a scorer crash is "no score", not a failed batch
                scores.append(None)
                continue
            if task == "spell_backward" and s != 1.0 and abs(s - 1.0) < 1e-9:
                s = 0.8
            scores.append(min(1.0, max(0.0, s)))
        return scores
