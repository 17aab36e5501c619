"""The synthetic customer generator (benchmarks/synth.py) and the committed seed it made."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("synth", ROOT / "benchmarks/synth.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["synth"] = module
    spec.loader.exec_module(module)
    return module


synth = _load()


@pytest.fixture(scope="module")
def customers() -> pd.DataFrame:
    return synth.generate_customers(20_000, seed=7)


def test_columns_and_ids(customers):
    assert tuple(customers.columns) == synth.COLUMNS
    assert len(customers) == 20_000
    assert customers["customer_id"].iloc[0] == "C000001"
    assert customers["customer_id"].iloc[-1] == "C020000"
    assert customers["customer_id"].is_unique


def test_same_seed_same_rows_other_seed_other_rows(customers):
    assert synth.generate_customers(20_000, seed=7).equals(customers)
    assert not synth.generate_customers(20_000, seed=8).equals(customers)


def test_committed_seed_is_regenerated_byte_for_byte(tmp_path):
    out = tmp_path / "customers.csv"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks/synth.py"),
            "--customers",
            "5000",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert '"rows": 5000' in result.stdout
    assert out.read_bytes() == (ROOT / "seeds/customers.csv").read_bytes()


def test_higher_tiers_buy_more_often_and_spend_more(customers):
    tier = customers["tier"].str.strip().str.lower()
    by_tier = customers.groupby(tier)[["purchase_frequency", "avg_order_value"]].median()
    order = ["bronze", "silver", "gold", "platinum"]
    assert by_tier.loc[order, "purchase_frequency"].is_monotonic_increasing
    assert by_tier.loc[order, "avg_order_value"].is_monotonic_increasing
    assert set(tier) == set(order)


def test_engagement_correlations(customers):
    opens = customers["historical_open_rate"]
    clicks = customers["historical_click_rate"]
    assert (clicks <= opens).all()
    assert opens.between(0, 1).all() and clicks.between(0, 1).all()
    assert np.corrcoef(opens, clicks)[0, 1] > 0.5
    # Engaged customers engaged recently.
    assert np.corrcoef(opens, customers["days_since_last_engagement"])[0, 1] < -0.2


def test_recency_never_exceeds_tenure(customers):
    tenure = (pd.Timestamp(synth.REFERENCE_DATE) - pd.to_datetime(customers["signup_date"])).dt.days
    assert (customers["days_since_last_purchase"] <= tenure).all()
    assert (customers["days_since_last_engagement"] <= tenure).all()
    assert (tenure <= 90).mean() > 0.03  # some new customers


def test_dirty_values_are_present(customers):
    age = customers["age"]
    assert 0.02 < age.isna().mean() < 0.04
    assert age.isin(["n/a", "999", "-4", "unknown", "0"]).sum() > 0
    for column in ("first_name", "city", "tier"):
        values = customers[column]
        assert (values != values.str.strip()).any(), column
        assert (values.str.strip() == values.str.strip().str.upper()).any(), column
    emails = customers["email"]
    assert (emails == emails.str.upper()).mean() > 0.01
    assert emails.str.strip().str.lower().is_unique


def test_large_generation_has_unique_ids():
    ids = synth.generate_customers(200_000, seed=11)["customer_id"]
    assert ids.is_unique
    assert ids.iloc[-1] == "C200000"


def test_rejects_negative_count():
    with pytest.raises(ValueError, match="n must be >= 0"):
        synth.generate_customers(-1)
