"""Evaluate a safety provider and the policy checks on a labelled safety corpus.

Usage::

    python benchmarks/safety_eval.py [--corpus CORPUS.jsonl] [--provider offline|llm_judge]
                                     [--project DIR]

The default corpus is the in-sample one, ``tests/fixtures/safety_corpus.jsonl`` (tune against
it). ``tests/fixtures/safety_holdout_v2.jsonl`` is the blind held-out set, written before the
screen was changed: measure on it, never tune a lexicon or pattern against it. A bare positional
corpus path is still accepted.

Each line is ``{id, text, expected: block|allow, kind, note, cited_texts?}``. Each text is
screened as a body with an empty subject: the provider's harm severities (the project's
thresholds), the content policy checks with **the project's configured policy**
(``vars.safety.policy`` of ``DIR/cpo.yml``, default this repository's project: forbidden
phrases, ``pii_allow``, health claims, urgency against the entry's ``cited_texts``, markup) and
the injection check. Length and required-element rules are switched off, since corpus texts are
snippets; grounding is not evaluated (it needs retrieval). ``--provider llm_judge`` asks the
model judge configured by ``OPENAI_BASE_URL``/``OPENAI_API_KEY`` (and ``CPO_JUDGE_MODEL``).

"Block" is the positive class. Prints one JSON line: precision, recall, f1, per-kind recall
(for ``clean``, the share correctly allowed), false positives (with the checks that fired) and
false negatives, and elapsed seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # this checkout's cpo, not whichever one is installed
    sys.path.insert(0, str(ROOT))

from cpo.engine.config import load_config, lookup  # noqa: E402
from cpo.personalization.policy import (  # noqa: E402
    Check,
    approved,
    harm_checks,
    injection_check,
    policy_checks,
)
from cpo.providers.base import SafetyRequest, get_provider_factory, prepare_batch  # noqa: E402

CORPUS = ROOT / "tests" / "fixtures" / "safety_corpus.jsonl"
# Snippets, not whole emails: no length limits (0 = no maximum) and no required elements.
SNIPPET_RULES: dict[str, Any] = {"body_min_words": 0, "body_max_words": 0, "required_patterns": {}}


def load_corpus(path: Path = CORPUS) -> list[dict[str, Any]]:
    """Read the JSONL corpus, one labelled entry per line."""
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def project_rules(project: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The project's ``vars.safety.policy`` (snippet rules applied) and thresholds."""
    config = load_config(project)
    policy = dict(lookup(config.vars, "safety.policy") or {})
    thresholds = dict(lookup(config.vars, "safety.thresholds") or {})
    return {**policy, **SNIPPET_RULES}, thresholds


def screen_entry(
    entry: dict[str, Any],
    provider: Any,
    policy: dict[str, Any] | None = None,
    thresholds: dict[str, int] | None = None,
) -> list[Check]:
    """All content checks for one corpus entry."""
    text = entry["text"]
    try:
        result = provider.analyze(SafetyRequest(key=entry["id"], text=text))
        checks = harm_checks(result, thresholds or {})
    except Exception as e:  # fail closed, as the build does
        checks = [Check("harm:unscreened", 0, False, f"not_screened: {type(e).__name__}")]
    rules = SNIPPET_RULES if policy is None else policy
    checks += policy_checks("", text, rules, entry.get("cited_texts", ()))
    checks.append(injection_check(text))
    return checks


def evaluate(
    entries: list[dict[str, Any]],
    provider: Any,
    policy: dict[str, Any] | None = None,
    thresholds: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Screen every entry and score the block/allow verdicts against the labels."""
    tp = fp = fn = 0
    kinds: dict[str, list[int]] = {}
    false_pos, false_neg = [], []
    # As the build's call layer does: a provider that batches scores every text in one go.
    prepare_batch(provider, [SafetyRequest(key=e["id"], text=e["text"]) for e in entries])
    for entry in entries:
        checks = screen_entry(entry, provider, policy, thresholds)
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
        "per_kind_recall": {k: round(c / n, 4) for k, (c, n) in sorted(kinds.items())},
        "false_positives": false_pos,
        "false_negatives": false_neg,
    }


def make_provider(name: str) -> Any:
    """The safety provider to evaluate, built as a target would build it."""
    settings: dict[str, Any] = {"type": name}
    if name == "llm_judge" and os.environ.get("CPO_JUDGE_MODEL"):
        settings["model"] = os.environ["CPO_JUDGE_MODEL"]
    return get_provider_factory("safety", name)(settings, os.environ)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse ``--corpus``, ``--provider`` and ``--project`` from ``argv[1:]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=None, help="labelled JSONL corpus")
    parser.add_argument("--provider", choices=("offline", "llm_judge"), default="offline")
    parser.add_argument("--project", type=Path, default=ROOT, help="project whose policy to use")
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
    policy, thresholds = project_rules(args.project)
    report = evaluate(entries, make_provider(args.provider), policy, thresholds)
    report["provider"] = args.provider
    report["elapsed_s"] = round(time.perf_counter() - start, 3)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
