"""Deterministic synthetic customers for the sample project and the 1,000,000-row benchmark.

The generator is vectorised numpy with one seeded ``Generator``, so the same ``(n, seed)`` always
gives the same rows and the same CSV bytes. The data has realistic structure for segmentation:
higher tiers buy more often and spend more per order, engaged customers open and click more, a
click rate never exceeds its open rate. It is also deliberately a little dirty, like a real CRM
export, so staging has something to clean: missing and nonsense ages, odd casing and stray
whitespace in names, cities and tiers, and some upper-case emails.

Usage:
    python benchmarks/synth.py --customers 5000 --out seeds/customers.csv
    python benchmarks/synth.py --customers 1000000 --out /tmp/customers_1m.csv

The CLI prints one JSON line: rows, path, seconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

#: The snapshot date the ``days_since_*`` columns are measured from (the project's ``as_of_date``).
REFERENCE_DATE = dt.date(2026, 11, 24)

COLUMNS = (
    "customer_id",
    "first_name",
    "email",
    "city",
    "age",
    "tier",
    "signup_date",
    "purchase_frequency",
    "avg_order_value",
    "days_since_last_purchase",
    "days_since_last_engagement",
    "historical_open_rate",
    "historical_click_rate",
)

TIERS = np.array(["bronze", "silver", "gold", "platinum"])
_TIER_P = np.array([0.50, 0.30, 0.15, 0.05])
# Per tier: median purchases per year and median order value (USD).
_TIER_FREQ = np.array([2.0, 4.0, 7.0, 12.0])
_TIER_AOV = np.array([45.0, 70.0, 110.0, 180.0])

FIRST_NAMES = np.array(
    [
        "Olivia",
        "Liam",
        "Emma",
        "Noah",
        "Ava",
        "Oliver",
        "Sophia",
        "Elijah",
        "Isabella",
        "James",
        "Mia",
        "William",
        "Amelia",
        "Benjamin",
        "Harper",
        "Lucas",
        "Evelyn",
        "Henry",
        "Abigail",
        "Theodore",
        "Emily",
        "Jack",
        "Ella",
        "Levi",
        "Elizabeth",
        "Alexander",
        "Camila",
        "Jackson",
        "Luna",
        "Mateo",
        "Sofia",
        "Daniel",
        "Avery",
        "Michael",
        "Mila",
        "Mason",
        "Aria",
        "Sebastian",
        "Scarlett",
        "Ethan",
        "Penelope",
        "Logan",
        "Layla",
        "Owen",
        "Chloe",
        "Samuel",
        "Victoria",
        "Jacob",
        "Madison",
        "Asher",
        "Eleanor",
        "Aiden",
        "Grace",
        "John",
        "Nora",
        "Joseph",
        "Riley",
        "Wyatt",
        "Zoey",
        "David",
        "Hannah",
        "Leo",
        "Hazel",
        "Luke",
        "Lily",
        "Julian",
        "Ellie",
        "Hudson",
        "Violet",
        "Grayson",
        "Lillian",
        "Zoe",
        "Priya",
        "Wei",
        "Fatima",
        "Diego",
        "Yuki",
        "Amara",
        "Mohammed",
        "Ingrid",
        "Kofi",
        "Sione",
    ]
)
LAST_NAMES = np.array(
    [
        "smith",
        "johnson",
        "williams",
        "brown",
        "jones",
        "garcia",
        "miller",
        "davis",
        "rodriguez",
        "martinez",
        "hernandez",
        "lopez",
        "gonzalez",
        "wilson",
        "anderson",
        "thomas",
        "taylor",
        "moore",
        "jackson",
        "martin",
        "lee",
        "perez",
        "thompson",
        "white",
        "harris",
        "sanchez",
        "clark",
        "ramirez",
        "lewis",
        "robinson",
        "walker",
        "young",
        "allen",
        "king",
        "wright",
        "scott",
        "torres",
        "nguyen",
        "hill",
        "flores",
        "green",
        "adams",
        "nelson",
        "baker",
        "hall",
        "rivera",
        "campbell",
        "mitchell",
        "carter",
        "roberts",
        "patel",
        "kim",
    ]
)
CITIES = np.array(
    [
        "Seattle",
        "Portland",
        "Denver",
        "Boulder",
        "Salt Lake City",
        "Boise",
        "Minneapolis",
        "Chicago",
        "Austin",
        "San Francisco",
        "Los Angeles",
        "San Diego",
        "Phoenix",
        "Albuquerque",
        "New York",
        "Boston",
        "Burlington",
        "Asheville",
        "Atlanta",
        "Nashville",
        "Anchorage",
        "Bend",
        "Missoula",
        "Bozeman",
        "Flagstaff",
        "Madison",
        "Raleigh",
        "Pittsburgh",
        "Spokane",
        "Reno",
    ]
)
_EMAIL_DOMAINS = np.array(["example.com", "example.org", "example.net", "mail.example.com"])


def generate_customers(n: int, seed: int = 7) -> pd.DataFrame:
    """Generate `n` synthetic customers, deterministically for a given `seed`.

    Args:
        n: Number of customers (ids ``C000001`` ... are unique and sequential).
        seed: Seed of the numpy ``Generator``; the same ``(n, seed)`` gives the same frame.

    Returns:
        A frame with the columns of `COLUMNS`, as a raw CRM export would hold them:
        ``customer_id``, ``first_name``, ``email``, ``city``, ``age``, ``tier`` and
        ``signup_date`` are strings (``age`` is missing for ~3% and sometimes nonsense such as
        ``"n/a"``), the rest are numbers.
    """
    return generate_customers_table(n, seed).to_pandas()


def generate_customers_table(n: int, seed: int = 7) -> pa.Table:
    """The same rows as `generate_customers`, as an Arrow table (no pandas round trip).

    Strings are built with Arrow compute kernels rather than numpy ``char`` loops, which keeps
    1,000,000 rows at about a second.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    width = max(6, len(str(n)))
    number = pc.cast(pa.array(np.arange(1, n + 1)), pa.string())
    ids = pc.binary_join_element_wise("C", pc.utf8_lpad(number, width, "0"), "")

    tier_idx = rng.choice(4, size=n, p=_TIER_P)
    # One latent engagement level per customer drives opens, clicks and recency of engagement;
    # higher tiers lean engaged.
    engagement = np.clip(rng.beta(2.0, 3.0, n) + 0.06 * tier_idx, 0.0, 1.0)

    frequency = np.round(_TIER_FREQ[tier_idx] * rng.lognormal(0.0, 0.45, n), 1)
    frequency = np.maximum(frequency, 0.1)
    aov = np.round(_TIER_AOV[tier_idx] * rng.lognormal(0.0, 0.35, n), 2)

    tenure = _tenure_days(rng, n)
    signup = np.datetime64(REFERENCE_DATE) - tenure.astype("timedelta64[D]")
    # Expected gap between purchases is 365 / frequency; about 20% of customers have lapsed.
    gap = 365.0 / frequency
    lapsed = rng.random(n) < 0.20
    recency = rng.exponential(gap) * np.where(lapsed, 4.0, 0.8) + lapsed * 120
    recency = np.minimum(np.round(recency), tenure).astype(np.int64)
    last_engaged = rng.exponential(8.0 + 240.0 * (1.0 - engagement) ** 2)
    last_engaged = np.minimum(np.round(last_engaged), tenure).astype(np.int64)

    open_rate = np.clip(0.05 + 0.6 * engagement + rng.normal(0.0, 0.05, n), 0.0, 1.0)
    click_rate = open_rate * np.clip(0.05 + 0.25 * engagement + rng.normal(0.0, 0.03, n), 0, 1)

    first = _pick(rng, FIRST_NAMES, n)
    last = _pick(rng, LAST_NAMES, n)
    domain = _pick(rng, _EMAIL_DOMAINS, n)
    email = pc.binary_join_element_wise(
        pc.utf8_lower(first), ".", last, ".", number, "@", domain, ""
    )
    columns = {
        "customer_id": ids,
        "first_name": _dirty_text(rng, first),
        "email": _dirty_email(rng, email),
        "city": _dirty_text(rng, _pick(rng, CITIES, n)),
        "age": _age(rng, n, tier_idx),
        "tier": _dirty_text(rng, pa.array(TIERS).take(pa.array(tier_idx)), rate=0.03),
        "signup_date": pc.cast(pa.array(signup.astype("datetime64[D]")), pa.string()),
        "purchase_frequency": pa.array(frequency),
        "avg_order_value": pa.array(aov),
        "days_since_last_purchase": pa.array(recency),
        "days_since_last_engagement": pa.array(last_engaged),
        "historical_open_rate": pa.array(np.round(open_rate, 4)),
        "historical_click_rate": pa.array(np.round(click_rate, 4)),
    }
    return pa.table({name: columns[name] for name in COLUMNS})


def write_customers(path: str | Path, n: int, seed: int = 7) -> Path:
    """Generate `n` customers and write them as a CSV (header, strings quoted, LF line ends).

    Args:
        path: Destination file; parent directories are created.
        n: Number of customers.
        seed: Generator seed; regenerating with the same arguments writes identical bytes.

    Returns:
        The path written.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    options = pacsv.WriteOptions(include_header=True, quoting_style="needed")
    pacsv.write_csv(generate_customers_table(n, seed), str(out), write_options=options)
    return out


def _pick(rng: np.random.Generator, vocabulary: np.ndarray, n: int) -> pa.Array:
    """`n` values drawn uniformly from `vocabulary`, as an Arrow string array."""
    return pa.array(vocabulary).take(pa.array(rng.integers(0, len(vocabulary), n)))


def _tenure_days(rng: np.random.Generator, n: int) -> np.ndarray:
    """Days since signup: mostly 0.5-10 years, plus about 6% who joined in the last 90 days."""
    tenure = rng.integers(180, 3650, n)
    recent = rng.random(n) < 0.06
    return np.where(recent, rng.integers(1, 90, n), tenure)


def _age(rng: np.random.Generator, n: int, tier_idx: np.ndarray) -> pa.Array:
    """Ages 18-85 (higher tiers a little older), ~3% missing and ~0.5% nonsense values."""
    age = np.clip(np.round(rng.normal(38.0 + 3.0 * tier_idx, 12.0)), 18, 85).astype(np.int64)
    text = pc.cast(pa.array(age), pa.string())
    draw = rng.random(n)
    junk = pa.array(np.array(["n/a", "999", "-4", "unknown", "0"])).take(
        pa.array(rng.integers(0, 5, n))
    )
    text = pc.if_else(pa.array((draw >= 0.03) & (draw < 0.035)), junk, text)
    return pc.if_else(pa.array(draw < 0.03), pa.scalar(None, pa.string()), text)


def _dirty_text(rng: np.random.Generator, values: pa.Array, rate: float = 0.06) -> pa.Array:
    """Upper-case, lower-case or whitespace-pad about `rate` of the values each."""
    draw = rng.random(len(values))
    padded = pc.binary_join_element_wise("  ", values, " ", "")
    out = pc.if_else(pa.array(draw < rate), pc.utf8_upper(values), values)
    out = pc.if_else(pa.array((draw >= rate) & (draw < 2 * rate)), pc.utf8_lower(values), out)
    return pc.if_else(pa.array((draw >= 2 * rate) & (draw < 3 * rate)), padded, out)


def _dirty_email(rng: np.random.Generator, values: pa.Array) -> pa.Array:
    """Upper-case about 2% of the addresses and add a trailing space to about 1%."""
    draw = rng.random(len(values))
    out = pc.if_else(pa.array(draw < 0.02), pc.utf8_upper(values), values)
    padded = pc.binary_join_element_wise(values, " ", "")
    return pc.if_else(pa.array((draw >= 0.02) & (draw < 0.03)), padded, out)


def main(argv: list[str] | None = None) -> None:
    """CLI: write ``--customers N`` rows to ``--out`` and print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=5000, help="number of customers")
    parser.add_argument("--out", default="seeds/customers.csv", help="CSV file to write")
    parser.add_argument("--seed", type=int, default=7, help="random seed")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    path = write_customers(args.out, args.customers, args.seed)
    seconds = round(time.perf_counter() - start, 3)
    print(json.dumps({"rows": args.customers, "path": str(path), "seconds": seconds}))


if __name__ == "__main__":
    main()
