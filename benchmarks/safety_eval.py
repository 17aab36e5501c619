"""Evaluate the offline safety screen and the policy checks on the labelled safety corpus.

Usage: ``python benchmarks/safety_eval.py [--corpus CORPUS.jsonl]`` (default: the in-sample corpus
``tests/fixtures/safety_corpus.jsonl``; ``tests/fixtures/safety_holdout.jsonl`` is the blind
held-out set: measure on it, never tune the lexicon or policy against it). A bare positional path
is still accepted for backward compatibility.

Each corpus text is screened as a body with an empty subject: the offline harm screen (default
thresholds), the content policy checks (forbidden phrases, PII, urgency against the entry's
``cited_texts``) and the injection check. Length and required-element rules are switched off,
since corpus texts are snippets, and grounding is not evaluated here (it needs retrieval).
"Block" is the positive class. Prints one JSON line: precision, recall, f1, per-kind recall,
false positives and negatives, and elapsed seconds (including the profanity model's import).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from cpo.policy import Check, approved, harm_checks, injection_check, policy_checks
from cpo.providers.base import SafetyRequest
from cpo.providers.offline_safety import OfflineSafety, make_offline_safety

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "safety_corpus.jsonl"
# Snippets, not whole emails: no length limits (0 = no maximum) and no required elements.
EVAL_POLICY: dict[str, Any] = {"body_min_words": 0, "body_max_words": 0}


def load_corpus(path: Path = CORPUS) -> list[dict[str, Any]]:
    """Read the JSONL corpus, one labelled entry per line."""
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def screen_entry(entry: dict[str, Any], provider: OfflineSafety) -> list[Check]:
    """All content checks for one corpus entry."""
    text = entry["text"]
    result = provider.analyze(SafetyRequest(key=entry["id"], text=text))
    checks = harm_checks(result, {})
    checks += policy_checks("", text, EVAL_POLICY, entry.get("cited_texts", ()))
    checks.append(injection_check(text))
    return checks


def evaluate(entries: list[dict[str, Any]], provider: OfflineSafety) -> dict[str, Any]:
    """Screen every entry and score the block/allow verdicts against the labels."""
    tp = fp = fn = 0
    kinds: dict[str, list[int]] = {}
    false_pos, false_neg = [], []
    for entry in entries:
        checks = screen_entry(entry, provider)
        blocked = not approved(checks)
        should_block = entry["expected"] == "block"
        hit = kinds.setdefault(entry["kind"], [0, 0])
        hit[1] += 1
        hit[0] += blocked == should_block
        if blocked and should_block:
            tp += 1
        elif blocked:
            fp += 1
            false_pos.append({"id": entry["id"], "by": [c.reason for c in checks if not c.passed]})
        elif should_block:
            fn += 1
            false_neg.append(entry["id"])
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "n": len(entries),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        # For "clean" this is the share correctly allowed (specificity).
        "per_kind_recall": {k: round(c / n, 4) for k, (c, n) in sorted(kinds.items())},
        "false_positives": false_pos,
        "false_negatives": false_neg,
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse ``--corpus PATH`` (or the legacy positional path) from ``argv[1:]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=None, help="labelled JSONL corpus")
    parser.add_argument("legacy_corpus", nargs="?", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv[1:])
    if args.corpus and args.legacy_corpus:
        parser.error("give the corpus once: either --corpus PATH or a positional PATH")
    args.corpus = args.corpus or args.legacy_corpus or CORPUS
    if not args.corpus.is_file():
        parser.error(f"corpus not found: {args.corpus} (pass --corpus PATH to a JSONL file)")
    return args


def main(argv: list[str]) -> int:
    start = time.perf_counter()
    args = parse_args(argv)
    entries = load_corpus(args.corpus)
    report = evaluate(entries, make_offline_safety({}, {}))
    report["elapsed_s"] = round(time.perf_counter() - start, 3)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
