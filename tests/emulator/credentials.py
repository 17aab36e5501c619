"""A fake azure-core `TokenCredential`: tests must never reach DefaultAzureCredential's probes."""

from __future__ import annotations

import time
from typing import Any

from azure.core.credentials import AccessToken


class FakeTokenCredential:
    """Hands out a fixed bearer token and records the scopes it was asked for."""

    def __init__(self, token: str = "test-bearer-token") -> None:
        self.token = token
        self.scopes: list[str] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.extend(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)

    def close(self) -> None:
        pass
