"""Screen every variant: harm categories (offline screen or Azure AI Content Safety), brand
policy, grounding and injection checks. One row per variant x check.

Fail-closed: a variant that could not be screened gets a failed ``harm:unscreened`` row, and a
variant that failed to generate gets a failed ``generation`` row, so neither is ever approved.
Whether unscreened variants fail the build is ``vars.safety.on_unscreened`` (fail | warn),
enforced by the data test ``data_tests/every_variant_screened.sql``.

Layered screening (``safety: {type: layered, providers: [...]}``): every layer is called through
the call layer on its own and gets its own ``harm:<layer>:<Category>`` rows, so the table says
which provider blocked what; a variant is approved only if every layer passes it. A layer that
could not screen a variant makes one failed ``harm:unscreened`` row naming it.
"""

from __future__ import annotations

import dataclasses

import pandas as pd
from _groundedness import groundedness_rows

from cpo.personalization import policy
from cpo.personalization.settings import SafetyVars
from cpo.providers.base import SafetyRequest, SafetyResult

COLUMNS = ["variant_id", "check", "severity", "passed", "reason"]


def model(ctx):
    variants = ctx.ref("variants").df()
    retrieved = ctx.ref("retrieved_content").df()
    content = ctx.ref("stg_content").df()
    footer = str(ctx.ref("message_footer").df()["footer"].iloc[0])  # required elements live here
    # vars.safety: the instance of its one model that checked it when cpo.yml loaded.
    safety = ctx.config.section("vars.safety", SafetyVars)
    thresholds = safety.resolved_thresholds()
    rules = safety.policy
    blocklists = {name: tuple(terms) for name, terms in safety.blocklists.items()}
    output_type = safety.output_type
    texts = dict(
        zip(content["document_id"], content["title"] + ". " + content["body"], strict=True)
    )
    retrieved_ids = _retrieved_by_segment(retrieved)

    generated = variants[variants["status"] == "generated"]
    requests = [
        SafetyRequest(
            key=row.variant_id,
            text=f"{row.subject}\n{row.body}",
            blocklists=blocklists,
            output_type=output_type,
        )
        for row in generated.itertuples()
    ]
    step_provider = ctx.provider("safety")
    layers = getattr(step_provider.provider, "layers", None)
    if layers:
        per_layer = {
            label: {
                o.key: o
                for o in dataclasses.replace(step_provider, provider=layer).call_all(
                    "analyze", requests
                )
            }
            for label, layer in layers
        }
    else:
        outcomes = step_provider.call_all("analyze", requests)
        per_layer = {"": {o.key: o for o in outcomes}}

    rows = []
    for row in variants.itertuples():
        if row.status != "generated":
            rows.append(
                [
                    row.variant_id,
                    "generation",
                    None,
                    False,
                    f"not_generated: {row.status}: {row.error}",
                ]
            )
            continue
        outcomes = {label: layer[row.variant_id] for label, layer in per_layer.items()}
        errors = [(label, o.error) for label, o in outcomes.items() if o.error]
        for label, error in errors:
            where = f" ({label})" if label else ""
            ctx.record_error(row.variant_id, f"safety screening failed{where}: {error}")
        segment = None if pd.isna(row.segment_id) else row.segment_id
        citations = [str(c) for c in row.citations]
        checks = policy.screen(
            row.subject,
            row.body,
            citations=citations,
            retrieved_ids=retrieved_ids.get(segment, []),
            cited_texts={c: texts.get(c, "") for c in citations},
            safety_result=None if errors else _first_result(outcomes),
            thresholds=thresholds,
            policy=rules,
            footer=footer,
            written_by_person=row.provider == "human",  # the control, from prompts/control/
        )
        if errors:
            # Say why it was not screened, next to the fail-closed verdict.
            error = "; ".join(f"{label}: {e}" if label else e for label, e in errors)
            checks = [_unscreened(c, error) for c in checks]
        elif layers:
            checks = _layered(checks, outcomes, thresholds)
        else:
            checks = _with_reasons(checks, _first_result(outcomes), "harm:")
        rows.extend([row.variant_id, c.check, c.severity, c.passed, c.reason] for c in checks)
    rows.extend(groundedness_rows(ctx, variants, texts))  # when the target configures one
    frame = pd.DataFrame(rows, columns=COLUMNS)
    blocked = frame.loc[~frame["passed"], "variant_id"].nunique()
    ctx.log.info("screening done", extra={"variants": len(variants), "blocked": int(blocked)})
    return frame.astype(
        {
            "variant_id": "string",
            "check": "string",
            "severity": "Int32",
            "passed": "bool",
            "reason": "string",
        }
    )


def _first_result(outcomes: dict) -> SafetyResult | None:
    return next(iter(outcomes.values())).result


def _layered(checks: list[policy.Check], outcomes: dict, thresholds: dict) -> list[policy.Check]:
    """Replace the harm rows with one set per layer: ``harm:<layer>:<Category>``."""
    kept = [c for c in checks if not c.check.startswith("harm:") and c.check != "blocklist"]
    harm: list[policy.Check] = []
    matches: list[str] = []
    for label, outcome in outcomes.items():
        layer_checks = policy.harm_checks(outcome.result, thresholds)
        prefix = f"harm:{label}:"
        for c in _with_reasons(layer_checks, outcome.result, "harm:"):
            if c.check.startswith("harm:"):
                harm.append(dataclasses.replace(c, check=prefix + c.check.removeprefix("harm:")))
        matches += [f"{label}: {m}" for m in outcome.result.blocklist_matches]
    blocklist = policy.Check(
        "blocklist",
        len(matches),
        not matches,
        "; ".join(f"blocklisted: {m}" for m in matches) or "ok",
    )
    return [*harm, blocklist, *kept]


def _with_reasons(checks: list[policy.Check], result: object, prefix: str) -> list[policy.Check]:
    """Append a model judge's reason (``JudgedResult.reasons``) to a failed harm row."""
    reasons = getattr(result, "reasons", None) or {}
    out = []
    for c in checks:
        category = c.check.removeprefix(prefix)
        if c.check.startswith(prefix) and not c.passed and reasons.get(category):
            c = dataclasses.replace(c, reason=f"{c.reason} ({reasons[category][:200]})")
        out.append(c)
    return out


def _unscreened(check: policy.Check, error: str) -> policy.Check:
    if check.check != "harm:unscreened":
        return check
    return policy.Check(check.check, check.severity, False, f"not_screened: {error}")


def _retrieved_by_segment(retrieved: pd.DataFrame) -> dict:
    grouped: dict = {}
    for segment, document_id in zip(retrieved["segment_id"], retrieved["document_id"], strict=True):
        grouped.setdefault(None if pd.isna(segment) else segment, []).append(document_id)
    return grouped
