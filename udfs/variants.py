"""Generate one variant per segment x tone, plus the control message written by a person.

Generation is per segment, never per customer: per-customer details stay merge tags
(``{{ first_name }}``) that ``messages`` renders in SQL. Prompts come from ``prompts/``; the
provider comes from the target (offline composer, Azure OpenAI, any OpenAI-compatible server).
The control (``prompts/control/subject.txt`` and ``body.txt``) is business-as-usual copy, never
sent to a provider; it is screened like any variant. Every item ends as one row: ``generated``,
``blocked`` (the answer was unusable; ``error`` names why), ``content_filtered`` or ``failed``
(the call itself failed). Failed and blocked items are recorded in ``run_errors``. When every
call failed the step fails, naming the provider's reason.
"""

from __future__ import annotations

import hashlib
import json

import pandas as pd

from cpo.errors import ProviderError
from cpo.personalization.prompting import CONTROL, variant_template
from cpo.providers.base import Document, GenerationRequest

HUMAN = "human"
"""The ``provider`` of the control: a person wrote it in ``prompts/control/``."""

COLUMNS = [
    "variant_id",
    "segment_id",
    "tone",
    "subject",
    "body",
    "citations",
    "provider",
    "model",
    "status",
    "error",
    "prompt_hash",
]


def variant_id(segment_id: str | None, tone: str) -> str:
    """Stable id of a variant: ``v_<segment>_<tone>``, or ``v_control``."""
    return "v_control" if segment_id is None else f"v_{segment_id}_{tone}"


def model(ctx):
    provider = ctx.provider("generation")
    settings = _settings(ctx)
    documents = _retrieved_documents(ctx)
    profiles = ctx.ref("segment_profiles").df().to_dict("records")
    items = [(p, tone) for p in profiles for tone in settings["tones"]]
    requests, keys = [], []
    for profile, tone in items:
        segment_id = None if profile is None else str(profile["segment_id"])
        docs = documents.get(segment_id, [])
        if not docs:
            ctx.record_error(
                variant_id(segment_id, tone),
                "no_documents: nothing retrieved, so no grounded variant; the fallback arm is used",
            )
            continue
        requests.append(_request(ctx, settings, profile, tone, docs))
        keys.append((segment_id, tone))
    outcomes = provider.call_all("generate", requests)
    rows = [_control_row(ctx)]
    for (segment_id, tone), request, outcome in zip(keys, requests, outcomes, strict=True):
        rows.append(_row(ctx, provider, segment_id, tone, request, outcome))
    failed = [o for o in outcomes if o.error]
    if outcomes and len(failed) == len(outcomes):
        raise ProviderError(
            f"every one of the {len(outcomes)} generation calls failed ({provider.name}, "
            f"{provider.model}); first error: {failed[0].error}",
            node=ctx.node.name,
        )
    ctx.log.info(
        "generation done",
        extra={
            "variants": len(rows),
            "failed": len(failed),
            "blocked": sum(r[8] == "blocked" for r in rows),
        },
    )
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.astype({c: "string" for c in COLUMNS if c != "citations"})


def _settings(ctx) -> dict:
    return {
        "tones": _tones(ctx),
        "min_words": ctx.var("generation.min_words", 40, expect=int),
        "max_words": ctx.var("generation.max_words", 120, expect=int),
        "subject_max_chars": ctx.var("generation.subject_max_chars", 60, expect=int),
        "temperature": ctx.var("generation.temperature", 0.4, expect=(int, float)),
        "max_tokens": ctx.var("generation.max_tokens", 500, expect=int),
        "brand": ctx.var("generation.brand", "our brand", expect=str),
    }


def _tones(ctx) -> list[str]:
    """``vars.generation.tones``, checked against each other and the folders in ``prompts/``."""
    tones = ctx.var("generation.tones", ["urgent", "informational", "friendly"], expect=list)
    available = ctx.services.prompts.tones()
    error = ctx.config.document.error
    for tone in tones:
        if not isinstance(tone, str) or not tone or tone == CONTROL:
            raise error("vars.generation.tones", f"{tone!r} is not a tone name")
        if tones.count(tone) > 1:
            raise error("vars.generation.tones", f"{tone!r} is listed twice; list it once")
        if tone not in available:
            raise error(
                "vars.generation.tones",
                f"tone {tone!r} has no folder prompts/tones/{tone}/ (found: "
                f"{', '.join(available) or 'none'}); fix the name, or create the folder with "
                "instructions.txt, compose.txt and subject.txt (see prompts/README.md)",
            )
    return list(tones)


def _retrieved_documents(ctx) -> dict[str | None, list[Document]]:
    # The query below reads both tables by name; these ref()s declare them to the DAG.
    ctx.ref("retrieved_content")
    ctx.ref("stg_content")
    rows = ctx.sql(
        "select r.segment_id, c.document_id, c.title, c.body, c.category, c.audience, "
        "c.keywords, cast(c.expires_at as varchar) "
        "from retrieved_content r join stg_content c using (document_id) "
        "order by r.segment_id nulls last, r.rank"
    ).fetchall()
    documents: dict[str | None, list[Document]] = {}
    for segment_id, *fields in rows:
        documents.setdefault(segment_id, []).append(
            Document(*(value if value is not None else "" for value in fields))
        )
    return documents


def _request(ctx, settings: dict, profile: dict | None, tone: str, docs: list[Document]):
    segment_id = None if profile is None else str(profile["segment_id"])
    segment = None
    if profile is not None:
        segment = {
            "segment_id": segment_id,
            "segment_name": profile["segment_name"],
            "description": profile.get("description") or "",
            "profile": {
                k: v
                for k, v in profile.items()
                if k not in ("segment_id", "segment_name", "description")
            },
        }
    common = {
        "min_words": settings["min_words"],
        "max_words": settings["max_words"],
        "subject_max_chars": settings["subject_max_chars"],
    }
    system = ctx.prompt(
        "system.txt", brand=settings["brand"], subject_max_chars=settings["subject_max_chars"]
    )
    prompt = ctx.prompt(
        "generation.txt", segment=segment, tone=tone, documents=[d.__dict__ for d in docs], **common
    )
    compose, subject = variant_template(tone, "compose"), variant_template(tone, "subject")
    focus = [] if profile is None else str(profile["segment_name"]).lower().split()
    params = {
        "merge_tags": list(ctx.services.prompts.merge_tags),
        "tone": tone,
        "template": ctx.prompt_source(compose),
        # Named from the project root in errors ("prompts/tones/urgent/compose.txt:3: ...").
        "template_name": f"prompts/{compose}",
        "subject_template": ctx.prompt_source(subject),
        "subject_template_name": f"prompts/{subject}",
        "min_words": settings["min_words"],
        "max_words": settings["max_words"],
        "max_subject_chars": settings["subject_max_chars"],
        "focus_terms": focus,
        "temperature": settings["temperature"],
        "max_tokens": settings["max_tokens"],
    }
    return GenerationRequest(
        key=variant_id(segment_id, tone),
        system=system,
        prompt=prompt,
        documents=tuple(docs),
        params=params,
    )


def _row(ctx, provider, segment_id, tone, request, outcome) -> list:
    vid = variant_id(segment_id, tone)
    prompt_hash = hashlib.sha256(
        json.dumps(
            [request.system, request.prompt, dict(request.params)], sort_keys=True, default=str
        ).encode()
    ).hexdigest()[:16]
    base = [vid, segment_id, tone]
    tail = [provider.name, provider.model]
    if outcome.error:
        ctx.record_error(vid, f"generation failed: {outcome.error}")
        return [*base, None, None, [], *tail, "failed", outcome.error, prompt_hash]
    result = outcome.result
    if result.finish_reason == "content_filter":
        ctx.record_error(vid, "content_filter: the service refused to generate this variant")
        return [*base, None, None, [], *tail, "content_filtered", "content_filter", prompt_hash]
    reason = getattr(result, "blocked_reason", None)
    if reason:
        ctx.record_error(vid, f"blocked: {reason}")
        return [*base, None, None, list(result.citations), *tail, "blocked", reason, prompt_hash]
    return [
        *base,
        result.subject,
        result.body,
        list(result.citations),
        *tail,
        "generated",
        None,
        prompt_hash,
    ]


def _control_row(ctx) -> list:
    """The control: written by a person in ``prompts/control/``, rendered, never generated."""
    subject = ctx.prompt(variant_template(CONTROL, "subject")).strip()
    body = ctx.prompt(variant_template(CONTROL, "body")).strip()
    digest = hashlib.sha256(f"{subject}\n{body}".encode()).hexdigest()[:16]
    source = f"prompts/{CONTROL}/"
    return [variant_id(None, CONTROL), None, CONTROL, subject, body, [], HUMAN, source,
            "generated", None, digest]  # fmt: skip
