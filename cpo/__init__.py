"""CPO: a dbt-style runner on DuckDB for personalised, grounded, screened messages."""

from cpo.errors import CPOError

__all__ = ["CPOError"]
__version__ = "0.1.0"
