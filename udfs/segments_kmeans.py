"""KMeans customer segments: the alternative to `segments_rules`, on when
``vars.segmentation.method`` is ``kmeans``.

Clusters customers on the features the customers file allows (log recency, log frequency, log
monetary value, engagement score: whichever exist) and on the source's attributes (numeric ones
as they are, categorical ones one-hot encoded, at most 20 values each), all standardised,
choosing k in ``[k_min, k_max]`` by silhouette score. To stay fast on 1,000,000
customers, k is chosen and the centroids are fitted on a fixed-seed sample of at most
``sample_size`` rows; every customer is then assigned to the nearest centroid. Each cluster is
named from its centroid ("High-value frequent buyers", "Lapsed low spenders") and gets a stable
id ``kmeans_01``... ordered by average monetary value (or size, without one), highest first.
"""

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from cpo.errors import ConfigurationError
from cpo.personalization.segmentation import SegmentationSettings, segmentation_settings

if TYPE_CHECKING:
    from sklearn.cluster import KMeans

FEATURES = ("recency_days", "frequency", "monetary", "engagement_score")
_LOGGED = ("recency_days", "frequency", "monetary")
_MAX_CATEGORIES = 20
OUTPUT_COLUMNS = ["customer_id", "segment_id", "segment_name", "segment_description"]
_N_INIT = 3
_SILHOUETTE_ROWS = 4000
# A centroid this many standard deviations from the mean counts as distinctive.
_DISTINCT = 0.5


def config(ctx: Any) -> dict[str, Any]:
    """Build this step only when ``vars.segmentation.method`` is ``kmeans``."""
    enabled = segmentation_settings(ctx.config).method == "kmeans"
    return {"enabled": enabled, "tags": ["segments"]}


def model(ctx: Any) -> pd.DataFrame:
    """Assign every customer in `customer_features` to a named KMeans segment.

    Args:
        ctx: The step context (``ref``, ``var``, ``log``).

    Returns:
        One row per customer: customer_id, segment_id, segment_name, segment_description.
    """
    from cpo.personalization.sources import source_view

    # k_min <= k_max, sample_size >= 100...: checked by the model when cpo.yml loaded.
    settings = segmentation_settings(ctx.config)
    relation = ctx.ref("customer_features")
    present = [f for f in FEATURES if f in relation.columns]
    attributes = source_view(ctx.config, "customers").attributes
    columns = ", ".join(f'"{c}"' for c in ("customer_id", *present, *attributes))
    if not present and not attributes:
        raise ConfigurationError(
            "KMeans needs at least one feature (map recency_days, frequency or monetary in "
            "sources.customers.columns) or attribute (sources.customers.attributes)",
            path="cpo.yml",
            key="vars.segmentation.method",
        )
    # Arrow, not .df(): 1,000,000 customer ids stay in Arrow buffers instead of Python strings.
    table = relation.project(columns).order("customer_id").to_arrow_table()
    if table.num_rows == 0:
        return pd.DataFrame(columns=OUTPUT_COLUMNS)
    return segment(table, settings, log=ctx.log, features=present, attributes=attributes)


def segment(
    table: pa.Table,
    settings: SegmentationSettings,
    log: Any = None,
    features: tuple[str, ...] | list[str] = FEATURES,
    attributes: tuple[str, ...] | list[str] = (),
) -> pd.DataFrame:
    """Cluster `table` (customer_id, `features`, `attributes`); one named segment per customer."""
    names, columns = list(features), []
    for f in features:
        columns.append(pc.fill_null(table[f], 0).to_numpy().astype("float64"))
    for a in attributes:
        column = table[a]
        if (
            pa.types.is_integer(column.type)
            or pa.types.is_floating(column.type)
            or (pa.types.is_boolean(column.type) or pa.types.is_decimal(column.type))
        ):
            names.append(a)
            columns.append(pc.fill_null(column.cast(pa.float64()), 0).to_numpy())
            continue
        text = pc.fill_null(column.cast(pa.string()), "")
        counts = pc.value_counts(text).to_pylist()
        top = sorted(counts, key=lambda c: (-c["counts"], c["values"]))[:_MAX_CATEGORIES]
        for value in sorted(c["values"] for c in top):
            names.append(f"{a}={value}")
            columns.append(pc.equal(text, value).to_numpy(zero_copy_only=False).astype("float64"))
    raw = np.column_stack(columns)
    matrix = _feature_matrix(raw, names)
    if len(matrix) <= settings.k_min:
        raise ConfigurationError(
            f"{len(matrix)} customers cannot form {settings.k_min} clusters; "
            "lower segmentation.k_min or use method: rules",
            path="cpo.yml",
            key="vars.segmentation.k_min",
        )
    # Imported here, not at the top: the engine imports this module for config(ctx) on every
    # build, and scikit-learn takes about a second to import.
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(settings.seed)
    size = min(settings.sample_size, len(matrix))
    sample_rows = np.sort(rng.choice(len(matrix), size=size, replace=False))
    scaler = StandardScaler().fit(matrix[sample_rows])
    scaled = scaler.transform(matrix)
    # One thread: on a 20,000-row sample with 4 features, OpenMP start-up and spin-waiting cost
    # more than they save, and twice as much when DuckDB or other steps share the cores.
    with threadpool_limits(limits=1):
        fitted, scores = _choose_k(scaled[sample_rows], settings)
        labels = fitted.predict(scaled)
    if log is not None:
        log.info("kmeans chose k=%d (silhouette by k: %s)", fitted.n_clusters, scores)
    return _named(table["customer_id"], raw, labels, fitted.cluster_centers_, names)


def _feature_matrix(raw: np.ndarray, names: list[str]) -> np.ndarray:
    """Log-transform the skewed features so a few big spenders do not own a cluster each."""
    values = raw.copy()
    for j, name in enumerate(names):
        if name in _LOGGED:
            values[:, j] = np.log1p(np.clip(values[:, j], 0.0, None))
    return values


def _choose_k(
    sample: np.ndarray, settings: SegmentationSettings
) -> tuple["KMeans", dict[int, float]]:
    """Fit each k in range on the sample; keep the best silhouette (the smaller k on ties)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    best: KMeans | None = None
    scores: dict[int, float] = {}
    k_max = min(settings.k_max, len(sample) - 1)
    for k in range(settings.k_min, k_max + 1):
        fitted = KMeans(n_clusters=k, n_init=_N_INIT, random_state=settings.seed).fit(sample)
        if len(set(fitted.labels_)) < 2:
            continue
        rows = min(_SILHOUETTE_ROWS, len(sample))
        score = silhouette_score(
            sample, fitted.labels_, sample_size=rows, random_state=settings.seed
        )
        scores[k] = round(float(score), 4)
        if best is None or scores[k] > scores[best.n_clusters]:
            best = fitted
    if best is None:
        raise ConfigurationError(
            "the customers' features are identical, so KMeans finds no clusters; use method: rules",
            path="cpo.yml",
            key="vars.segmentation.method",
        )
    return best, scores


def _named(
    customer_ids: pa.ChunkedArray,
    raw: np.ndarray,
    labels: np.ndarray,
    centers: np.ndarray,
    names: list[str] | None = None,
) -> pd.DataFrame:
    """Give clusters ids ordered by average monetary value (else size), names, descriptions."""
    names = list(names or FEATURES)
    k = len(centers)
    counts = np.bincount(labels, minlength=k)
    sums = np.column_stack([np.bincount(labels, raw[:, j], minlength=k) for j in range(len(names))])
    means = sums / np.maximum(counts, 1)[:, None]
    overall = dict(zip(names, raw.mean(axis=0), strict=True))
    key = means[:, names.index("monetary")] if "monetary" in names else counts.astype(float)
    order = np.argsort(-key, kind="stable")
    catalogue: dict[int, tuple[str, str, str]] = {}
    used: set[str] = set()
    for position, cluster in enumerate(order.tolist(), start=1):
        z = dict(zip(names, centers[cluster], strict=True))
        mean = dict(zip(names, means[cluster], strict=True))
        share = counts[cluster] / len(labels)
        description = _describe(mean, overall, z, int(counts[cluster]), share)
        catalogue[cluster] = (f"kmeans_{position:02d}", _unique(_name(z), used), description)
    ids, titles, descriptions = zip(*(catalogue[c] for c in range(k)), strict=True)
    index = pa.array(labels)
    return pa.table(
        {
            "customer_id": customer_ids,
            "segment_id": pa.array(ids).take(index),
            "segment_name": pa.array(titles).take(index),
            "segment_description": pa.array(descriptions).take(index),
        }
    ).to_pandas()


def _name(z: dict[str, float]) -> str:
    """A human name from a centroid in standard units (recency: high = long ago)."""
    if not any(f in z for f in FEATURES):
        top = sorted(z, key=lambda n: -abs(z[n]))[:2]
        return "Customers with " + " and ".join(
            f"{'high' if z[n] > 0 else 'low'} {n}"
            if "=" not in n
            else (n.replace("=", " ") if z[n] > 0 else f"not {n.replace('=', ' ')}")
            for n in top
        )
    z = {f: z.get(f, 0.0) for f in FEATURES} | z
    if z["recency_days"] > _DISTINCT:
        name = "Lapsed " + _level(z["monetary"], "high spenders", "customers", "low spenders")
    else:
        value = _level(z["monetary"], "High-value", "Mid-value", "Low-spend")
        habit = _level(z["frequency"], "frequent", "regular", "occasional")
        name = f"{value} {habit} buyers"
    engaged = _level(z["engagement_score"], ", highly engaged", "", ", rarely engaged")
    return name + engaged


def _level(z: float, high: str, middle: str, low: str) -> str:
    """`high`, `middle` or `low` depending on how far `z` is from the mean."""
    if z > _DISTINCT:
        return high
    return low if z < -_DISTINCT else middle


def _unique(name: str, used: set[str]) -> str:
    """Number repeated names ("... (2)") so every segment name is distinct."""
    candidate, n = name, 2
    while candidate in used:
        candidate, n = f"{name} ({n})", n + 1
    used.add(candidate)
    return candidate


_PHRASES = {
    "recency_days": ("bought long ago", "bought recently"),
    "frequency": ("buys often", "buys rarely"),
    "monetary": ("spends much more", "spends much less"),
    "engagement_score": ("opens and clicks emails a lot", "rarely opens or clicks emails"),
}


def _describe(
    mean: dict[str, float],
    overall: dict[str, float],
    z: dict[str, float],
    customers: int,
    share: float,
) -> str:
    """Sizes, averages against all customers, and the two most distinctive traits."""
    distinctive = sorted(z, key=lambda f: -abs(z[f]))[:2]
    traits = [_phrase(f, z[f]) for f in distinctive if abs(z[f]) > _DISTINCT]
    lead = "Most distinctive: " + "; ".join(traits) + ". " if traits else ""
    m, o = mean, overall
    parts = []
    if "monetary" in m:
        parts.append(
            f"average spend ${m['monetary']:,.0f} a year (all customers ${o['monetary']:,.0f})"
        )
    if "frequency" in m:
        parts.append(f"{m['frequency']:.1f} orders a year ({o['frequency']:.1f})")
    if "recency_days" in m:
        parts.append(f"last purchase {m['recency_days']:.0f} days ago ({o['recency_days']:.0f})")
    if "engagement_score" in m:
        parts.append(f"engagement {m['engagement_score']:.0f}/100 ({o['engagement_score']:.0f})")
    detail = (", ".join(parts) + ".") if parts else ""
    return f"{lead}{customers:,} customers ({share:.0%}). {detail[:1].upper()}{detail[1:]}".strip()


def _phrase(name: str, z: float) -> str:
    if name in _PHRASES:
        return _PHRASES[name][0 if z > 0 else 1]
    if "=" in name:
        column, value = name.split("=", 1)
        return f"{'mostly' if z > 0 else 'rarely'} {column} {value}"
    return f"{'high' if z > 0 else 'low'} {name}"
