"""The experiment report's figures: matplotlib SVGs returned as ``data:`` URIs.

Each plot takes the report's `cpo.reporting.data.ReportData` and returns a data URI, or None
when there is nothing to draw; `PLOTS` maps the ``<img>`` id in the page to its plot. Matplotlib
is imported lazily (Agg backend) so importing the report costs nothing until a figure is drawn.
The small readers of the results table shared with the HTML sections (`overall_results`,
`primary_metric`, `srm_p`, `finite`) live here too, so the page depends on the plots and never
the reverse. The funnel's stages come from `cpo.reporting.tables`.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cpo.reporting.tables import FUNNEL_EVENTS, FUNNEL_LABELS

if TYPE_CHECKING:
    from cpo.reporting.data import ReportData

DECISION_COLORS = {
    "ship": "#1a7f37",
    "no_ship": "#cf222e",
    "inconclusive": "#9a6700",
    "invalid": "#8250df",
    "simulated": "#57606a",
    "info": "#6e7781",
}
ARM_PALETTE = ("#0969da", "#e36209", "#1a7f37", "#8250df", "#bf3989", "#0a7e8c", "#953800")
CONTROL_COLOR = "#6e7781"
_TEXT, _MUTED, _GRID = "#24292f", "#57606a", "#eaeef2"


# -- reading the results table ---------------------------------------------------------------


def finite(value: Any) -> bool:
    """Whether `value` is a finite number (None, NaN, ±inf and non-numbers are not)."""
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def overall_results(data: ReportData) -> pd.DataFrame:
    """The overall (not per-segment) result rows; an empty frame when there are no results."""
    if data.results is None:
        return pd.DataFrame()
    return data.results[data.results["segment_id"].isna()].reset_index(drop=True)


def primary_metric(results: pd.DataFrame) -> str:
    """The metric whose role is ``primary`` (else the first metric)."""
    primary = results[results.get("metric_role", pd.Series(dtype=str)) == "primary"]
    return str((primary if not primary.empty else results)["metric"].iloc[0])


def srm_p(data: ReportData) -> float | None:
    """The sample-ratio-mismatch p-value stored with the results, if any."""
    if data.results is None or "srm_p_value" not in data.results:
        return None
    values = data.results["srm_p_value"].dropna()
    return float(values.iloc[0]) if not values.empty else None


def _lift_scale(results: pd.DataFrame) -> int:
    """100 (show percent) when every row's effect is relative, else 1 (absolute)."""
    scale = results.get("effect_scale")
    relative = scale is None or bool((scale.fillna("relative") == "relative").all())
    return 100 if relative else 1


def _lift_text(value: float, scale: int) -> str:
    return f"{value:+.1f}{'%' if scale == 100 else ''}"


# -- figure helpers --------------------------------------------------------------------------


def _figure(width: float, height: float) -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "font.family": "DejaVu Sans",
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.edgecolor": "#8c959f",
            "axes.labelcolor": _TEXT,
            "xtick.color": _MUTED,
            "ytick.color": _MUTED,
            "svg.hashsalt": "cpo-report",
            "axes.titleweight": "bold",
            "axes.titlesize": 10,
            "axes.axisbelow": True,
        }
    )
    return plt.figure(figsize=(width, height))


def _svg(fig: Any) -> str:
    """Lay out, render and close `fig`; return it as an SVG data URI."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    # tight_layout leaves a placeholder layout engine behind, and savefig lays out (draws) any
    # figure with an engine once more before the real draw: a third of the render time.
    fig.set_layout_engine("none")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _note(
    ax: Any, text: str, xy: tuple[float, float], offset: tuple[float, float], **style: Any
) -> None:
    """Annotate `xy` with `text`, shifted by `offset` points."""
    ax.annotate(text, xy, xytext=offset, textcoords="offset points", **style)


def _arm_colors(arms: Sequence[str], control: str) -> dict[str, str]:
    colors, i = {}, 0
    for arm in arms:
        if arm == control:
            colors[arm] = CONTROL_COLOR
        else:
            colors[arm] = ARM_PALETTE[i % len(ARM_PALETTE)]
            i += 1
    return colors


# -- plots -----------------------------------------------------------------------------------


def forest_plot(data: ReportData) -> str | None:
    """Each treatment arm's lift with its interval, one panel per metric."""
    overall = overall_results(data)
    if overall.empty:
        return None
    metrics = list(dict.fromkeys(overall["metric"]))
    arms = list(dict.fromkeys(overall["arm"]))
    scale = _lift_scale(overall)
    fig = _figure(14.0, 0.6 + 0.36 * len(arms) * len(metrics) + 0.45 * len(metrics))
    axes = fig.subplots(len(metrics), 1, sharex=False, squeeze=False)[:, 0]
    for ax, metric in zip(axes, metrics, strict=True):
        rows = overall[overall["metric"] == metric].set_index("arm").reindex(arms)
        for y, (_, row) in enumerate(rows.iterrows()):
            color = DECISION_COLORS.get(str(row.get("decision")), _MUTED)
            est, lo, hi = (row.get(k) for k in ("estimate", "ci_low", "ci_high"))
            if finite(lo) and finite(hi):
                ax.plot(
                    [lo * scale, hi * scale], [y, y], color=color, lw=2.2, solid_capstyle="round"
                )
            if finite(est):
                ax.plot(est * scale, y, "o", color=color, ms=7, mec="white", mew=1.2)
                text = _lift_text(est * scale, scale)
                _note(ax, text, (est * scale, y), (0, 7), ha="center", fontsize=8, color=_TEXT)
            else:
                ax.text(0, y, "  no estimate", va="center", fontsize=8, color=_MUTED)
        ax.axvline(0, color="#8c959f", lw=1, ls="--")
        ax.set_yticks(range(len(arms)), arms)
        ax.set_ylim(len(arms) - 0.4, -0.7)
        role = (
            rows["metric_role"].dropna().iloc[0]
            if "metric_role" in rows and rows["metric_role"].notna().any()
            else ""
        )
        ax.set_title(f"{metric}  ({role})" if role else metric, loc="left")
        ax.grid(axis="x", color=_GRID)
    axes[-1].set_xlabel(
        "relative lift vs control (%)" if scale == 100 else "absolute difference vs control"
    )
    handles = [_legend_dot(c, d.replace("_", " ")) for d, c in DECISION_COLORS.items()]
    fig.legend(
        handles=handles, loc="lower center", ncol=4, frameon=False, bbox_to_anchor=(0.5, 1.0)
    )
    return _svg(fig)


def _legend_dot(color: str, label: str) -> Any:
    from matplotlib.lines import Line2D

    return Line2D([], [], marker="o", ls="", color=color, label=label, ms=7)


def heatmap_plot(data: ReportData) -> str | None:
    """Lift of the primary metric per segment and arm; * marks adjusted p < alpha."""
    if data.results is None:
        return None
    seg = data.results[data.results["segment_id"].notna()]
    if seg.empty:
        return None
    metric = primary_metric(data.results)
    seg = seg[seg["metric"] == metric]
    scale = _lift_scale(seg)
    table = seg.pivot_table(index="segment_id", columns="arm", values="estimate", aggfunc="first")
    pvals = seg.pivot_table(
        index="segment_id", columns="arm", values="p_value_adjusted", aggfunc="first"
    ).reindex_like(table)
    values = table.to_numpy(dtype=float) * scale
    finite_values = values[~pd.isna(values)]
    bound = float(max(abs(finite_values).max(), 1e-9)) if finite_values.size else 1.0
    fig = _figure(1.9 + 1.45 * table.shape[1], 0.9 + 0.48 * table.shape[0])
    ax = fig.subplots()
    image = ax.imshow(
        np.ma.masked_invalid(values), cmap="RdBu", vmin=-bound, vmax=bound, aspect="auto"
    )
    ax.set_facecolor(_GRID)
    for (i, j), value in np.ndenumerate(values):
        if math.isnan(value):
            ax.text(j, i, "n/a", ha="center", va="center", fontsize=8, color=_MUTED)
            continue
        star = "*" if finite(pvals.iat[i, j]) and pvals.iat[i, j] < data.alpha else ""
        color = "white" if abs(value) > 0.6 * bound else _TEXT
        text = _lift_text(value, scale) + star
        ax.text(j, i, text, ha="center", va="center", fontsize=8.5, color=color)
    ax.set_xticks(range(table.shape[1]), list(table.columns))
    ax.set_yticks(range(table.shape[0]), [data.segments.get(s, s) for s in table.index])
    ax.tick_params(length=0)
    for side in ("left", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_title(f"{metric}: lift by segment", loc="left")
    bar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
    bar.set_label("relative lift (%)" if scale == 100 else "absolute difference")
    bar.outline.set_visible(False)
    return _svg(fig)


def funnel_plot(data: ReportData) -> str | None:
    """Share of assigned customers reaching each stage, per arm (one panel per stage)."""
    if data.funnel is None or data.funnel.empty:
        return None
    from matplotlib.ticker import FuncFormatter

    funnel = data.funnel
    arms = list(funnel["arm"])
    colors = _arm_colors(arms, data.control)
    fig = _figure(14.0, 3.0)
    axes = fig.subplots(1, len(FUNNEL_EVENTS))
    for ax, event in zip(axes, FUNNEL_EVENTS, strict=True):
        share = (funnel[event] / funnel["assigned"].where(funnel["assigned"] > 0)) * 100
        bars = ax.bar(range(len(arms)), share.fillna(0), color=[colors[a] for a in arms], width=0.7)
        for rect, value in zip(bars, share, strict=True):
            label = "n/a" if pd.isna(value) else f"{value:.1f}%"
            top = (rect.get_x() + rect.get_width() / 2, rect.get_height())
            _note(ax, label, top, (0, 2), ha="center", fontsize=7.5)
        ax.set_title(FUNNEL_LABELS[event], loc="left")
        ax.set_xticks(range(len(arms)), arms, rotation=30, ha="right")
        ax.set_ylim(0, max(float(share.max() if share.notna().any() else 0) * 1.25, 0.1))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}%"))
        ax.grid(axis="y", color=_GRID)
    axes[0].set_ylabel("% of assigned customers")
    return _svg(fig)


def srm_plot(data: ReportData) -> str | None:
    """Observed customers per arm against the counts the configured weights expect."""
    if data.assigned is None or data.assigned.empty:
        return None
    assigned = data.assigned
    arms = list(assigned["arm"])
    total = float(assigned["customers"].sum())
    weight_sum = sum(data.weights.get(a, 0.0) for a in arms) or float(len(arms))
    expected = [
        total * (data.weights.get(a, 0.0) if data.weights else 1.0) / weight_sum for a in arms
    ]
    colors = _arm_colors(arms, data.control)
    fig = _figure(6.6, 3.0)
    ax = fig.subplots()
    x = range(len(arms))
    counts = assigned["customers"]
    ax.bar(x, counts, color=[colors[a] for a in arms], width=0.6, label="observed")
    ax.scatter(
        x, expected, marker="_", s=900, color=_TEXT, lw=2, label="expected from weights", zorder=3
    )
    for i, value in enumerate(counts):
        label = f"{int(value):,}"
        bold = {"color": "white", "fontweight": "bold"}
        _note(ax, label, (i, value / 2), (0, 0), ha="center", va="center", fontsize=8.5, **bold)
    ax.set_xticks(x, arms)
    ax.set_ylabel("customers")
    p = srm_p(data)
    ax.set_title("Sample ratio" + (f": χ² p = {p:.3g}" if p is not None else ""), loc="left")
    ax.legend(frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, fontsize=8)
    ax.set_ylim(0, max(max(expected), float(counts.max())) * 1.12)
    ax.grid(axis="y", color=_GRID)
    return _svg(fig)


def power_plot(data: ReportData) -> str | None:
    """Achieved power per arm and metric against the power the decision rule needs."""
    overall = overall_results(data)
    if overall.empty or "power" not in overall:
        return None
    from matplotlib.ticker import PercentFormatter

    rows = overall[["arm", "metric", "power"]].copy()
    labels = [f"{r.arm} · {r.metric}" for r in rows.itertuples()]
    fig = _figure(14.0, 0.8 + 0.22 * len(rows))
    ax = fig.subplots()
    values = rows["power"].fillna(0).clip(0, 1)
    colors = ["#1a7f37" if v >= data.min_power else "#9a6700" for v in values]
    ax.barh(range(len(rows)), values, color=colors, height=0.65)
    ax.axvline(
        data.min_power, color="#cf222e", ls="--", lw=1.2, label=f"needed: {data.min_power:.0%}"
    )
    for y, value in enumerate(rows["power"]):
        text = "n/a" if pd.isna(value) else f"{value:.0%}"
        _note(ax, text, (min(float(value or 0), 1), y), (3, 0), va="center", fontsize=7.5)
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.08)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("power to detect the metric's MDE")
    ax.set_title("Power achieved vs needed", loc="left")
    ax.legend(frameon=False, loc="upper right", fontsize=8)
    return _svg(fig)


def safety_plot(data: ReportData) -> str | None:
    """Variants passing and blocked per safety check."""
    if data.screenings is None or data.screenings.empty:
        return None
    s = data.screenings
    fig = _figure(14.0, 0.8 + 0.24 * len(s))
    ax = fig.subplots()
    y = range(len(s))
    ax.barh(y, s["passed"], color="#1a7f37", height=0.65, label="passed")
    ax.barh(y, s["blocked"], left=s["passed"], color="#cf222e", height=0.65, label="blocked")
    for i, row in enumerate(s.itertuples()):
        if row.blocked:
            end = (row.passed + row.blocked, i)
            text = f"{row.blocked} blocked"
            _note(ax, text, end, (3, 0), va="center", fontsize=7.5, color="#cf222e")
    ax.set_yticks(list(y), list(s["check"]), fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("variants screened")
    ax.set_title("Safety checks", loc="left")
    ax.legend(frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.18), fontsize=8, ncol=2)
    return _svg(fig)


PLOTS: dict[str, Callable[[ReportData], str | None]] = {
    "plot-forest": forest_plot,
    "plot-heatmap": heatmap_plot,
    "plot-funnel": funnel_plot,
    "plot-srm": srm_plot,
    "plot-power": power_plot,
    "plot-safety": safety_plot,
}
"""Each plot by the id of its ``<img>`` in the page, in page order."""

PLOT_IDS = tuple(PLOTS)
