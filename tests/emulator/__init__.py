"""A loopback emulator of the Azure services CPO calls, for tests and for trying things by hand.

with Emulator(tls=True) as emu:
    emu.url, emu.ca_pem, emu.requests, emu.faults
"""

from tests.emulator.credentials import FakeTokenCredential
from tests.emulator.server import (
    DEFAULT_SAFETY_TERMS,
    Emulator,
    EmulatorKeys,
    Faults,
    RecordedRequest,
    compose_answer,
)

__all__ = [
    "DEFAULT_SAFETY_TERMS",
    "Emulator",
    "EmulatorKeys",
    "FakeTokenCredential",
    "Faults",
    "RecordedRequest",
    "compose_answer",
]
