"""Structured JSON-lines logging under ``logs/``, with hashed identifiers and no secrets."""

from __future__ import annotations

import hashlib
import json
import logging
import os
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
    """Send the ``cpo`` logger to ``logs/cpo.log`` (JSON lines or text), replacing old handlers."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logs_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(logs_dir / "cpo.log", encoding="utf-8")
    handler.setFormatter(TextFormatter() if log_format == "text" else JsonFormatter(run_id))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def hash_id(value: object, salt_env: str = "CPO_LOG_SALT") -> str:
    """Salted SHA-256 of an identifier (for logs): stable for a salt, not reversible."""
    salt = os.environ.get(salt_env, "cpo-default-salt")
    return hashlib.sha256(f"{salt}:{value}".encode()).hexdigest()[:16]
