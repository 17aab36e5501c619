"""Declaring scalar SQL functions in ``udfs/*.py`` for models to call.

    from cpo.engine.udf import sql_function

    @sql_function(parameters=["VARCHAR"], return_type="VARCHAR")
    def normalise_city(city):
        return city.strip().title() if city else None

Functions are registered on every connection CPO opens. Declare ``side_effects=True`` honestly
for functions that are not pure (random, time, I/O), so DuckDB never caches or folds them.
Models that call Python functions should be tables, not views: other DuckDB clients cannot run
the function when they read the view.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
MARK = "__cpo_sql_function__"


def sql_function(
    *,
    parameters: Sequence[str],
    return_type: str,
    name: str | None = None,
    side_effects: bool = False,
    vectorized: bool = False,
) -> Callable[[F], F]:
    """Mark a Python function as a SQL function.

    Args:
        parameters: DuckDB type names of the arguments (``["VARCHAR", "DOUBLE"]``).
        return_type: DuckDB type name of the result.
        name: The SQL name (default: the Python name).
        side_effects: True if the function is not a pure function of its arguments.
        vectorized: True if the function takes and returns Arrow arrays (much faster).
    """

    def mark(function: F) -> F:
        setattr(
            function,
            MARK,
            {
                "name": name or function.__name__,
                "parameters": tuple(parameters),
                "return_type": return_type,
                "side_effects": side_effects,
                "vectorized": vectorized,
            },
        )
        return function

    return mark
