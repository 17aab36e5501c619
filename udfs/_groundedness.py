"""Groundedness detection rows for ``safety_screenings`` (helper, not a step).

When the target names a ``groundedness`` provider (Azure AI Content Safety's
``text:detectGroundedness``, or the offline lexical one), every generated variant's body is
checked against the documents it cites: one ``grounding:groundedness`` row per variant. The
control, written by a person, is not. Fail-closed: a variant that could not be checked fails.
"""

from __future__ import annotations

from cpo.personalization import grounding
from cpo.providers.base import GroundednessRequest

CHECK = "grounding:groundedness"


def groundedness_rows(ctx, variants, texts: dict) -> list[list]:
    """``[variant_id, check, severity, passed, reason]`` rows, or none without a provider."""
    if "groundedness" not in ctx.config.target.providers:
        return []
    requests = [
        GroundednessRequest(
            key=row.variant_id,
            text=grounding.MERGE_TAG.sub("", grounding.CITATION.sub("", row.body or "")),
            sources=tuple(texts.get(str(c), "") for c in row.citations),
        )
        for row in variants.itertuples()
        if row.status == "generated" and row.provider != "human"
    ]
    rows = []
    for outcome in ctx.provider("groundedness").call_all("detect", requests):
        if outcome.error:
            ctx.record_error(outcome.key, f"groundedness detection failed: {outcome.error}")
            rows.append([outcome.key, CHECK, None, False, f"not_checked: {outcome.error}"])
            continue
        result = outcome.result
        share = round(result.ungrounded_share * 100)
        if result.ungrounded:
            reason = f"ungrounded: {share}% of the text is not supported by the cited documents"
            rows.append([outcome.key, CHECK, share, False, reason])
        else:
            rows.append([outcome.key, CHECK, share, True, "grounded"])
    return rows
