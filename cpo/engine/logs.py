"""Structured JSON-lines logging under ``logs/``, with hashed identifiers and no secrets.

Identifiers are hashed with the project's salt: ``$CPO_LOG_SALT`` (or the variable named by
``logging.salt_env``) when set, otherwise a random salt created once per project in
``.cpo/salt`` (mode 600; never exported, never logged). A salt anyone knows would let a name list
reverse hashed first names, so there is no public default.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import sys
from datetime import UTC, datetime
from pathlib import Path

LOGGER_NAME = "cpo"
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, event, run id, and the record's extra fields."""

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            "run_id": self.run_id,
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """Human-readable lines: time, level, event and the extra fields as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in record.__dict__.items() if k not in _STANDARD)
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S")
        return f"{stamp} {record.levelname.lower():7} {record.getMessage()} {extras}".rstrip()


def configure(logs_dir: Path, run_id: str, *, log_format: str = "json") -> logging.Logger:
    """Send the ``cpo`` logger to ``logs/cpo.log`` (JSON lines or text), replacing old handlers.

    When ``logs/`` cannot be written (a read-only project folder), warnings and errors go to
    stderr instead, and the command carries on.
    """
    logger = logging.getLogger(LOGGER_NAME)
    for old in list(logger.handlers):
        logger.removeHandler(old)
        old.close()
    fallback = None
    try:
        logs_dir.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(logs_dir / "cpo.log", encoding="utf-8")
    except OSError as e:
        fallback = f"cannot write {logs_dir / 'cpo.log'} ({e.strerror or e}): logging to stderr"
        handler = logging.StreamHandler(sys.stderr)
        handler.setLevel(logging.WARNING)
    handler.setFormatter(TextFormatter() if log_format == "text" else JsonFormatter(run_id))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if fallback:
        logger.warning(fallback)
    return logger


SALT_FILE = Path(".cpo") / "salt"
_salts: dict[Path | None, str] = {}


def project_salt(root: Path | None, salt_env: str = "CPO_LOG_SALT") -> tuple[str, str | None]:
    """The salt for hashing identifiers, and a one-time notice when one was just created.

    Args:
        root: The project folder (its ``.cpo/salt`` is read, or created on first use).
        salt_env: The environment variable that overrides the project's salt.

    Returns:
        (salt, notice): `notice` says what happened when a salt was created (or could not be
        saved), once per project and process; None otherwise.
    """
    from_env = os.environ.get(salt_env)
    if from_env:
        return from_env, None
    key = Path(root).resolve() if root is not None else None
    if key in _salts:
        return _salts[key], None
    if key is None:  # no project: a salt for this process only, never a public constant
        _salts[None] = secrets.token_hex(32)
        return _salts[None], None
    path = key / SALT_FILE
    notice = None
    try:
        salt = path.read_text(encoding="utf-8").strip()
    except OSError:
        salt = ""
    if not salt:
        salt = secrets.token_hex(32)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(salt + "\n")
            notice = (
                f"Created a random hashing salt in {SALT_FILE} (hashed ids in logs, test "
                f"failures and exports use it; set {salt_env} to use your own)."
            )
        except FileExistsError:  # another process created it first: use theirs
            salt = path.read_text(encoding="utf-8").strip() or salt
        except OSError as e:
            notice = (
                f"Could not save a hashing salt in {SALT_FILE} ({e.strerror or e}): hashed ids "
                f"hold for this run only; set {salt_env} for stable ones."
            )
    _salts[key] = salt
    if notice:
        logging.getLogger(LOGGER_NAME).warning(notice)
    return salt, notice


def hash_id(value: object, salt_env: str = "CPO_LOG_SALT", root: Path | None = None) -> str:
    """Salted SHA-256 of an identifier (for logs): stable for a salt, not reversible.

    Args:
        value: The identifier (a customer id, an email).
        salt_env: The environment variable holding the salt, if set.
        root: The project folder whose ``.cpo/salt`` is used when the variable is not set.
    """
    salt, _ = project_salt(root, salt_env)
    return hashlib.sha256(f"{salt}:{value}".encode()).hexdigest()[:16]
