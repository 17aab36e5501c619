"""The roles a source's columns map to (``sources.<name>.columns``): one table, with types.

Every role says what it means, the type ``stg_customers``/``stg_content`` give it, whether it is
personal data and whether a source must map it. The source loader (`cpo.personalization.sources`),
the starter block of ``init`` (`cpo.personalization.init`: a numeric role read from a text column
is flagged) and the segment rules (`cpo.personalization.segmentation`: an unknown column that is a
role says to map it) all read this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

RoleType = Literal["varchar", "integer", "double", "date"]


@dataclass(frozen=True)
class Role:
    """One role of a source.

    Attributes:
        meaning: What the column holds, for messages and the ``init`` block.
        type: The type the staging model casts it to.
        pii: Personal data (never logged or exported in clear).
        required: A source must map it.
    """

    meaning: str
    type: RoleType = "varchar"
    pii: bool = False
    required: bool = False

    @property
    def numeric(self) -> bool:
        """Whether the staging model casts the role to a number."""
        return self.type in ("integer", "double")


CUSTOMER_ROLE_TABLE: dict[str, Role] = {
    "customer_id": Role("the customer key (required)", required=True),
    "first_name": Role("given name (PII)", pii=True),
    "email": Role("email address (PII)", pii=True),
    "city": Role("home city"),
    "age": Role("age in years", "integer"),
    "tier": Role("loyalty tier or plan"),
    "signup_date": Role("date the customer joined", "date"),
    "recency_days": Role("days since the last purchase", "double"),
    "frequency": Role("purchases per year", "double"),
    "monetary": Role("spend per year", "double"),
    "avg_order_value": Role("average order value", "double"),
    "open_rate": Role("share of emails opened, 0-1", "double"),
    "click_rate": Role("share of emails clicked, 0-1", "double"),
    "last_engagement_days": Role("days since the last open or click", "double"),
}
CONTENT_ROLE_TABLE: dict[str, Role] = {
    "document_id": Role("the document key (required)", required=True),
    "title": Role("document title (required)", required=True),
    "body": Role("factual sentences (required)", required=True),
    "category": Role("product, promotion, support, ..."),
    "audience": Role("who it is for: 'all', a tier, or a list such as 'gold, platinum'"),
    "keywords": Role("search keywords"),
    "approved_at": Role("approval date; empty = draft", "date"),
    "expires_at": Role("last valid date; empty = no expiry", "date"),
}
ROLE_TABLES = {"customers": CUSTOMER_ROLE_TABLE, "content": CONTENT_ROLE_TABLE}

# Views of the table, in the shapes its readers use.
CUSTOMER_ROLES: dict[str, str] = {name: r.meaning for name, r in CUSTOMER_ROLE_TABLE.items()}
CONTENT_ROLES: dict[str, str] = {name: r.meaning for name, r in CONTENT_ROLE_TABLE.items()}
ROLES = {"customers": CUSTOMER_ROLES, "content": CONTENT_ROLES}
REQUIRED = {
    source: tuple(name for name, r in table.items() if r.required)
    for source, table in ROLE_TABLES.items()
}
PII_ROLES = frozenset(name for table in ROLE_TABLES.values() for name, r in table.items() if r.pii)
NUMERIC_ROLES = frozenset(
    name for table in ROLE_TABLES.values() for name, r in table.items() if r.numeric
)
CUSTOMER_ATTRIBUTE_ROLES = frozenset(n for n, r in CUSTOMER_ROLE_TABLE.items() if not r.required)
"""The customer roles that become columns a segment rule may use (all but the key)."""
