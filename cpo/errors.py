"""The one exception hierarchy of CPO.

Every error a user can fix is a `CPOError` subclass whose message says what is wrong, where
(file, line, key or node) and how to fix it. The CLI catches `CPOError` in one place and exits 1;
anything else is a bug and shows a traceback (exit 2).
"""

from __future__ import annotations


class CPOError(Exception):
    """Base class of every error CPO raises on purpose.

    Args:
        message: What is wrong and how to fix it.
        path: The file the user must edit, if any.
        line: The 1-based line in `path`, if known.
        node: The node (model, seed, step, test) concerned, if any.
        key: The configuration key path concerned (``vars.safety.thresholds``), if any.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        node: str | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line
        self.node = node
        self.key = key

    def __str__(self) -> str:
        where = ""
        if self.path:
            where = f"{self.path}:{self.line}: " if self.line else f"{self.path}: "
        if self.key:
            where += f"{self.key}: "
        return f"{where}{self.message}"


class ConfigurationError(CPOError):
    """`cpo.yml`, `schema.yml`, `--vars` or the environment is invalid or incomplete."""


class UsageError(CPOError):
    """The command line asked for something that cannot be done (unknown selector, bad flag)."""


class ModelError(CPOError):
    """A node could not be compiled or executed (Jinja, SQL, Python step, seed file)."""


class ProviderError(CPOError):
    """An AI service call failed, or its configuration or credentials are wrong.

    The call layer decides from the fields whether to try again and how long to wait; every
    provider classifies its failures into them (`cpo.providers.failures`).

    Args:
        message: What failed and how to fix it (never a secret).
        retryable: Whether the same request may succeed later (timeouts, 408, 429, 5xx).
        status: The HTTP status the service answered, if any.
        retry_after: Seconds the service asked to wait (``Retry-After``), if it said.
        timeout: The service did not answer in time (the call layer sends fewer at once).
        path: As `CPOError`.
        line: As `CPOError`.
        node: As `CPOError`.
        key: As `CPOError`.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        status: int | None = None,
        retry_after: float | None = None,
        timeout: bool = False,
        path: str | None = None,
        line: int | None = None,
        node: str | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(message, path=path, line=line, node=node, key=key)
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        self.timeout = timeout


class BudgetExceededError(ProviderError):
    """The next paid call would take the build over its cost cap."""
