"""Helpers shared by the content steps (not a node: the leading underscore says so)."""

from __future__ import annotations

from typing import Any

from cpo.providers.base import Document


def active_documents(ctx: Any, *, exclude_flagged: bool = True) -> list[Document]:
    """Approved, unexpired documents of ``stg_content`` (flagged injections, markup and
    formulas left out)."""
    flags = " and not injection_flag and not markup_flag and not formula_flag"
    where = "is_active" + (flags if exclude_flagged else "")
    rows = ctx.sql(
        "select document_id, title, body, category, audience, keywords, "
        f"cast(expires_at as varchar) from stg_content where {where} order by document_id"
    ).fetchall()
    return [Document(*(value if value is not None else "" for value in row)) for row in rows]


def segment_query(profile: dict[str, Any], keywords: str) -> str:
    """A search query from a segment's name, description and dominant features."""
    parts = [
        str(profile.get("segment_name") or ""),
        str(profile.get("description") or ""),
        str(profile.get("dominant_tier") or ""),
        keywords,
    ]
    return " ".join(p for p in parts if p).strip()
