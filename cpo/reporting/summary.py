"""What a build did with its AI steps, in a few numbers: the build summary.

Printed at the end of every build and written to ``target/run_results.json`` (``summary``):
variants approved and blocked (per reason), customers on the fallback message, calls made and
served from cache, tokens and cost. When every personalised variant was blocked, that is said
first, with the top reasons and the query that lists them. Reasons are codes and check names,
never copy, so the summary is safe to print and to keep.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

# Every failed check, including a 'generation' row for each variant that was not generated.
INSPECT_QUERY = "select * exclude (severity) from safety_screenings where not passed"
TOP_REASONS = 5


def collect(
    db: Any,
    ledger: Iterable[Sequence[Any]],
    run_id: str,
    errors: Sequence[Sequence[str]] = (),
) -> dict[str, Any] | None:
    """The summary of one build from its (staging) database and the call ledger.

    Args:
        db: The `cpo.adapters.duckdb.Database` being built (read only here).
        ledger: Rows of the call ledger (`cpo.engine.calls.LEDGER_COLUMNS` order).
        run_id: This build's id: only its ledger rows count.
        errors: This build's ``run_errors`` rows (step, item_key, error, at); the most common
            messages are kept (providers mask secrets in them).

    Returns:
        The summary, or None when the build touched no variant and made no call.
    """
    rows = [r for r in ledger if r[0] == run_id]
    tables = _tables(db)
    if "variants" not in tables and not rows:
        return None
    summary: dict[str, Any] = {"calls": _calls(rows)}
    common = Counter(f"{step}: {error}" for step, _item, error, *_ in errors)
    summary["errors"] = [
        {"error": text[:300], "items": n} for text, n in common.most_common(TOP_REASONS)
    ]
    if "variants" in tables:
        summary["variants"] = _variants(db, tables)
    if "assignments" in tables:
        summary["customers"] = _customers(db)
    summary["headline"] = headline(summary)
    return summary


def _tables(db: Any) -> set[str]:
    return set(db.relations())  # the adapter's own catalogue (DuckDB or Spark)


def _calls(rows: list[Sequence[Any]]) -> dict[str, Any]:
    # LEDGER_COLUMNS: run_id, step, provider, model, item_key, cache_hit, input_tokens,
    # output_tokens, cost_usd, latency_ms, status, attempts, error, called_at
    made = [r for r in rows if not r[5] and r[4] != "index"]
    return {
        "made": len(made),
        "cached": sum(1 for r in rows if r[5]),
        "failed": sum(1 for r in made if r[10] == "error"),
        "attempts": sum(int(r[11] or 0) for r in made),
        "input_tokens": sum(int(r[6] or 0) for r in rows),
        "output_tokens": sum(int(r[7] or 0) for r in rows),
        "cost_usd": round(sum(float(r[8] or 0) for r in rows), 6),
        "by_step": dict(Counter(r[1] for r in made)),
    }


def _variants(db: Any, tables: set[str]) -> dict[str, Any]:
    variants = db.execute(
        "select variant_id, tone, status, coalesce(error, '') from variants"
    ).fetchall()
    approved: set[str] = set()
    if "approved_variants" in tables:
        approved = {v for (v,) in db.execute("select variant_id from approved_variants").fetchall()}
    failed_checks: dict[str, list[str]] = {}
    if "safety_screenings" in tables:
        for variant_id, check, reason in db.execute(
            "select variant_id, \"check\", coalesce(reason, '') from safety_screenings "
            'where not passed order by variant_id, "check"'
        ).fetchall():
            failed_checks.setdefault(variant_id, []).append(f"{check} ({_code(reason)})")
    reasons: Counter[str] = Counter()
    for variant_id, _tone, status, error in variants:
        if variant_id in approved:
            continue
        if status != "generated":
            reasons[f"{status} ({_code(error)})"] += 1
        elif variant_id in failed_checks:
            reasons.update(dict.fromkeys(failed_checks[variant_id], 1))
        else:
            reasons["not screened"] += 1
    personalised = [v for v in variants if v[1] != "control"]
    control = [v for v in variants if v[1] == "control"]
    return {
        "total": len(variants),
        "approved": sum(1 for v in variants if v[0] in approved),
        "blocked": sum(1 for v in variants if v[0] not in approved),
        "personalised": len(personalised),
        "personalised_approved": sum(1 for v in personalised if v[0] in approved),
        "control_approved": bool(control) and all(v[0] in approved for v in control),
        "blocked_by_reason": dict(reasons.most_common()),
    }


def _code(reason: str) -> str:
    """The code of a reason (``unsupported_sentence: sentence 2 ...`` -> its first words)."""
    head = reason.split(";")[0].split(":")[0].strip()
    return head[:60] or "no reason given"


def _customers(db: Any) -> dict[str, Any]:
    total, fallback, without = db.execute(
        "select count(*), count(*) filter (where is_fallback), "
        "count(*) filter (where variant_id is null) from assignments"
    ).fetchone()
    return {"total": total, "on_fallback": fallback, "without_message": without}


def headline(summary: dict[str, Any]) -> str | None:
    """The one thing to say first, if any: every personalised variant was blocked."""
    variants = summary.get("variants")
    if not variants or not variants["personalised"] or variants["personalised_approved"]:
        return None
    top = list(variants["blocked_by_reason"].items())[:TOP_REASONS]
    reasons = ", ".join(f"{reason} x{count}" for reason, count in top) or "none recorded"
    return (
        f"Every personalised variant was blocked ({variants['personalised']} of "
        f"{variants['personalised']}): customers get the fallback message. Top reasons: "
        f'{reasons}. Inspect them with: cpo show --inline "{INSPECT_QUERY}"'
    )


def lines(summary: dict[str, Any] | None) -> list[str]:
    """The summary as console lines (headline first)."""
    if not summary:
        return []
    out = [summary["headline"]] if summary.get("headline") else []
    variants = summary.get("variants")
    if variants:
        text = f"Variants: {variants['approved']} of {variants['total']} approved"
        if variants["blocked_by_reason"]:
            blocked = ", ".join(
                f"{reason} x{count}"
                for reason, count in list(variants["blocked_by_reason"].items())[:TOP_REASONS]
            )
            text += f"; blocked: {blocked}"
        if not variants["control_approved"]:
            text += "; the control is NOT approved"
        out.append(text)
    customers = summary.get("customers")
    if customers:
        text = (
            f"Customers: {customers['total']:,}, {customers['on_fallback']:,} on the fallback "
            "message"
        )
        if customers["without_message"]:
            text += f", {customers['without_message']:,} without any message"
        out.append(text)
    for error in summary.get("errors", [])[:3]:
        out.append(f"Error ({error['items']} item(s)): {error['error']}")
    c = summary["calls"]
    out.append(
        f"Calls: {c['made']} made ({c['failed']} failed, {c['attempts']} attempts), "
        f"{c['cached']} from cache; tokens {c['input_tokens']:,} in / {c['output_tokens']:,} out; "
        f"cost ${c['cost_usd']:.4f}"
    )
    return out
