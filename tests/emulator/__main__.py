"""Run the emulator by hand: ``python -m tests.emulator --port 0 [--tls]``."""

from __future__ import annotations

import argparse
import contextlib
import threading

from tests.emulator.server import Emulator


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.emulator", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free)")
    parser.add_argument("--tls", action="store_true", help="serve HTTPS with a self-signed cert")
    args = parser.parse_args()
    with Emulator(tls=args.tls, port=args.port) as emu:
        keys = emu.keys
        print(f"emulator listening on {emu.url}", flush=True)
        if emu.ca_pem:
            print(f"CA certificate: {emu.ca_pem}", flush=True)
        print(
            f"keys: openai={keys.openai} search_admin={keys.search_admin} "
            f"search_query={keys.search_query} safety={keys.safety} token={keys.token}",
            flush=True,
        )
        print("faults: POST /_emulator/faults; requests: GET /_emulator/requests", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
