"""The report and the docs site in a real headless Chromium: no console errors, plots and the
lineage graph render.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON
messages separated by NUL bytes on file descriptors 3 and 4), so no websocket client is needed.
Skipped only when no Chromium binary is installed (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cpo.engine.docs import write_docs
from cpo.engine.export import load_manifest
from cpo.engine.project import Project
from cpo.reporting.report import PLOT_IDS, write_report

CHROMIUM = next(
    (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
    None,
)
SCREENSHOT = Path(__file__).resolve().parent.parent / "target" / "report.png"
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary on PATH (Debian: apt-get install -y chromium)"
)


class Browser:
    """A headless Chromium and one page, spoken to over the DevTools pipe."""

    def __init__(self, profile: Path) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire_fds() -> None:  # runs in the child: Chromium reads fd 3 and writes fd 4
            # Through fresh duplicates, since a pipe end may already be fd 3 or 4 itself.
            read_end, write_end = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        self.process = subprocess.Popen(
            [
                CHROMIUM,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-pipe",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=wire_fds,
            close_fds=False,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self.events: list[dict[str, Any]] = []
        self._next_id = 0
        threading.Thread(target=self._read, daemon=True).start()
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]

    def _read(self) -> None:
        buffer = b""
        while chunk := os.read(self._from_chrome, 1 << 16):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for message in messages:
                self._messages.put(json.loads(message))

    def send(
        self,
        method: str,
        params: dict | None = None,
        *,
        session: bool = False,
        timeout: float = 20.0,
    ) -> dict[str, Any]:
        """Send one command and wait for its result (events seen meanwhile are kept)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._messages.get(timeout=max(deadline - time.monotonic(), 0.01))
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 20.0) -> dict[str, Any]:
        """Wait for an event of the page's session."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event.get("method") == method:
                    return event
            self.events.append(self._messages.get(timeout=max(deadline - time.monotonic(), 0.01)))

    def close(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)
        os.close(self._to_chrome)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    b = Browser(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield b
    finally:
        b.close()


def console_errors(events: list[dict[str, Any]]) -> list[str]:
    """Uncaught exceptions, console.error/assert calls and browser log errors (failed loads)."""
    errors = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            errors.append(str(params.get("exceptionDetails", {}).get("text")))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append(json.dumps(params.get("args")))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            errors.append(str(params["entry"].get("text")))
    return errors


def load(browser: Browser, url: str) -> None:
    browser.events.clear()
    for domain in ("Runtime", "Log", "Page"):
        browser.send(f"{domain}.enable", session=True)
    browser.send("Page.navigate", {"url": url}, session=True)
    browser.wait_for("Page.loadEventFired")


def evaluate(browser: Browser, expression: str) -> Any:
    result = browser.send(
        "Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=True
    )
    return result["result"].get("value")


PLOTS_JS = """JSON.stringify(%s.map(id => {
  const el = document.getElementById(id);
  return {id, present: !!el, loaded: !!el && el.complete && el.naturalWidth > 0,
          width: el ? el.getBoundingClientRect().width : 0};
}))"""


def test_report_renders_in_chromium_with_every_plot(
    sample_build: Path, browser: Browser, tmp_path: Path
) -> None:
    report = write_report(Project.load(sample_build).config, out=tmp_path / "report.html")
    load(browser, report.as_uri())

    assert console_errors(browser.events) == []
    plots = json.loads(evaluate(browser, PLOTS_JS % json.dumps(list(PLOT_IDS))))
    assert [p["id"] for p in plots if not (p["present"] and p["loaded"])] == []
    assert all(p["width"] > 200 for p in plots), plots
    title = evaluate(browser, "document.querySelector('#decision h2').textContent")
    assert title.startswith("Decision:")

    # A full-page screenshot for people to look at, in this repository's target/ folder.
    height = evaluate(browser, "document.documentElement.scrollHeight")
    browser.send(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1280, "height": int(height), "deviceScaleFactor": 1, "mobile": False},
        session=True,
    )
    shot = browser.send("Page.captureScreenshot", {"format": "png"}, session=True)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    SCREENSHOT.write_bytes(base64.b64decode(shot["data"]))
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert SCREENSHOT.stat().st_size > 50_000


def test_console_error_detection_works(tmp_path: Path, browser: Browser) -> None:
    # The check above must be able to fail: a broken page is caught.
    page = tmp_path / "broken.html"
    page.write_text(
        "<html><body><script>throw new Error('boom')</script><img src='missing.png'></body></html>",
        encoding="utf-8",
    )
    load(browser, page.as_uri())
    time.sleep(0.3)  # the failed image load is logged just after the load event
    errors = console_errors(browser.events)
    assert any("boom" in e or "Uncaught" in e for e in errors), errors


def test_report_before_any_build_renders_cleanly(tmp_path: Path, browser: Browser) -> None:
    from tests.sample import copy_sample_project

    project = copy_sample_project(tmp_path / "fresh")
    report = write_report(Project.load(project).config)
    load(browser, report.as_uri())
    assert console_errors(browser.events) == []
    text = evaluate(browser, "document.body.innerText")
    assert "No database yet" in text


LINEAGE_JS = """JSON.stringify((() => {
  const svg = document.getElementById('lineage-graph');
  const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
  const node = document.getElementById('node-dim_customer');
  return {svg: svg instanceof SVGSVGElement, width: box.width, height: box.height,
          nodes: document.querySelectorAll('#lineage-graph g.node').length,
          edges: document.querySelectorAll('#lineage-graph path.edge').length,
          nodeWidth: node ? node.getBBox().width : 0,
          link: node && new URL(node.closest('a').getAttribute('href'), document.baseURI).href};
})())"""


def test_docs_render_in_chromium_with_the_lineage_graph(
    sample_build: Path, browser: Browser, tmp_path: Path
) -> None:
    target = sample_build / "target"
    manifest = load_manifest(target)
    index = write_docs(
        manifest, Project.load(sample_build).config, target, out_dir=tmp_path / "docs"
    )
    load(browser, index.as_uri())
    assert console_errors(browser.events) == []
    lineage = json.loads(evaluate(browser, LINEAGE_JS))
    graph = [n for n, v in manifest["nodes"].items() if v["resource_type"] != "test"]
    assert lineage["svg"] and lineage["width"] > 200 and lineage["height"] > 200, lineage
    assert lineage["nodes"] == len(graph) and lineage["edges"] > 0
    assert lineage["nodeWidth"] > 100  # the box is drawn, not just present in the markup

    # The graph's link to a node opens that node's page, which also loads cleanly.
    assert lineage["link"] == (tmp_path / "docs" / "nodes" / "dim_customer.html").as_uri()
    load(browser, lineage["link"])
    assert console_errors(browser.events) == []
    assert evaluate(browser, "document.querySelector('header h1').textContent") == "dim_customer"
    columns = evaluate(browser, "document.querySelectorAll('#columns tbody tr').length")
    assert columns > 5
