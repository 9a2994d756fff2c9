"""A real browser cannot borrow the proxy's identity: headless Chromium opens pages served from
other local origins whose scripts try a simple (text/plain) POST, a JSON fetch and a WebSocket to
the proxy, and a page on another name that resolves to 127.0.0.1 (DNS rebinding). From a foreign
origin everything is blocked and the emulator sees no inference request; from an origin listed in
FOUNDRY_PROXY_CORS_ORIGINS the JSON fetch succeeds and its answer is readable.

Chromium comes from Debian's `chromium` package (scripts/test installs it); FOUNDRY_PROXY_CHROMIUM
names another binary.
"""

from __future__ import annotations

import http.server as http_server
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from typing import Any, Iterator

import pytest

from conftest import DEMO, serve_env, start_emulator, start_serve, http

BROWSER_TIMEOUT = 60.0  # until a page has reported its results

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>attempts</title>
<script>
const proxy = %(proxy)s;
const rebound = %(rebound)s;
const chat = JSON.stringify({model: %(model)s, messages: [{role: "user", content: "from a web page"}]});
const results = {};

async function attempt(name, run) {
  try { results[name] = await run(); } catch (e) { results[name] = {error: String(e)}; }
}

function websocket(url) {
  return new Promise((resolve) => {
    let socket;
    try { socket = new WebSocket(url); } catch (e) { resolve({error: String(e)}); return; }
    const timer = setTimeout(() => { resolve({opened: false, timeout: true}); try { socket.close(); } catch (e) {} }, 5000);
    socket.onopen = () => { clearTimeout(timer); resolve({opened: true}); socket.close(); };
    socket.onerror = () => { clearTimeout(timer); resolve({opened: false}); };
  });
}

(async () => {
  // A "simple" request: no preflight, the answer is opaque, but it is sent.
  await attempt("simple_post", async () => {
    const answer = await fetch(proxy + "/v1/chat/completions",
      {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body: chat});
    return {type: answer.type};
  });
  // A JSON request: preflighted; its answer is readable only with a CORS grant.
  await attempt("json_fetch", async () => {
    const answer = await fetch(proxy + "/v1/chat/completions",
      {method: "POST", headers: {"Content-Type": "application/json"}, body: chat});
    return {status: answer.status, body: await answer.json()};
  });
  // DNS rebinding: another name that resolves to 127.0.0.1 (simple request, opaque answer).
  await attempt("rebound_post", async () => {
    const answer = await fetch(rebound + "/v1/chat/completions",
      {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body: chat});
    return {type: answer.type};
  });
  // WebSockets get no CORS at all: only the proxy's Origin check stands in the way.
  await attempt("websocket", () => websocket(proxy.replace("http", "ws") + "/v1/realtime?model=" + %(model)s));
  await fetch("/report", {method: "POST", body: JSON.stringify(results)});
})();
</script>
"""


class Pages:
    """An HTTP server for one origin (127.0.0.1, on `port` or any free one): serves `page` at /
    and records what the page reports."""

    def __init__(self, page: str, port: int = 0):
        self.reports: list[dict[str, Any]] = []
        self.arrived = threading.Event()
        pages = self

        class Handler(http_server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                body = page.encode() if self.path == "/" else b""
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", "0"))
                pages.reports.append(json.loads(self.rfile.read(length) or b"{}"))
                pages.arrived.set()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http_server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def chromium_binary() -> str:
    named = os.environ.get("FOUNDRY_PROXY_CHROMIUM")
    found = named or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("the browser test needs Chromium: run scripts/test (it installs Debian's chromium) "
                    "or set FOUNDRY_PROXY_CHROMIUM")
    return found


def visit(url: str, pages: Pages) -> dict[str, Any]:
    """Opens `url` in headless Chromium and returns what the page reported (bounded)."""
    with tempfile.TemporaryDirectory(prefix="foundry-proxy-chromium-") as profile:
        args = [chromium_binary(), "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-extensions", "--disable-background-networking", "--disable-dev-shm-usage",
                f"--user-data-dir={profile}", "--host-resolver-rules=MAP rebound.test 127.0.0.1", url]
        browser = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            if not pages.arrived.wait(BROWSER_TIMEOUT):
                browser.kill()
                _, err = browser.communicate(timeout=10)
                pytest.fail(f"the page at {url} reported nothing within {BROWSER_TIMEOUT} s; "
                            f"chromium said: {err.decode(errors='replace')[-2000:]}")
        finally:
            if browser.poll() is None:
                browser.terminate()
                try:
                    browser.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    browser.kill()
                    browser.wait(timeout=10)
    return pages.reports[-1]


def inference_count(emulator_url: str, path_end: str = "") -> int:
    """Inference requests the emulator has seen (those whose path ends with `path_end`)."""
    answer = http("GET", f"{emulator_url}/_emulator/state")
    assert answer.status == 200, answer
    return sum(1 for r in answer.json()["inference_requests"] if r["path"].endswith(path_end))


def page_for(proxy_url: str) -> str:
    port = proxy_url.rsplit(":", 1)[1]
    return PAGE % {"proxy": json.dumps(proxy_url), "rebound": json.dumps(f"http://rebound.test:{port}"),
                   "model": json.dumps(DEMO["CHAT_DEPLOYMENT"])}


@pytest.fixture(scope="module")
def guarded() -> Iterator[tuple[str, str, int]]:
    """An emulator and a `serve` that allows one origin, http://localhost:ALLOWED_PORT (the port is
    reserved before the proxy starts, and the allowed page is served there)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        allowed_port = probe.getsockname()[1]
    emulator, emulator_url = start_emulator()
    proxy = None
    try:
        proxy, proxy_url = start_serve(serve_env(
            emulator_url, DEMO["CLIENT_ID"], DEMO["CLIENT_SECRET"],
            FOUNDRY_PROXY_CORS_ORIGINS=f"http://localhost:{allowed_port}"), "serve-cors")
        proxy.wait_ready(proxy_url)
        yield proxy_url, emulator_url, allowed_port
    finally:
        if proxy is not None:
            proxy.stop()
        emulator.stop()


def test_foreign_page_cannot_use_the_proxy(guarded: tuple[str, str, int]) -> None:
    """A page on another local origin: its simple POST, JSON fetch, rebinding POST and WebSocket
    all fail, and the emulator receives no inference request."""
    proxy_url, emulator_url, _ = guarded
    before = inference_count(emulator_url)
    pages = Pages(page_for(proxy_url))
    try:
        report = visit(f"http://127.0.0.1:{pages.port}/", pages)
    finally:
        pages.close()
    assert report["simple_post"] == {"type": "opaque"}, report  # sent, answer unreadable
    assert "error" in report["json_fetch"], report  # no CORS grant: the fetch fails
    assert "error" not in report["rebound_post"], report
    assert report["websocket"].get("opened") is False, report
    time.sleep(0.5)  # anything still in flight would have reached the emulator by now
    assert inference_count(emulator_url) == before, "a request from the foreign page reached Azure"


def test_allowed_origin_page_is_served(guarded: tuple[str, str, int]) -> None:
    """A page on the origin listed in FOUNDRY_PROXY_CORS_ORIGINS reads the proxy's answer."""
    proxy_url, emulator_url, allowed_port = guarded
    before = inference_count(emulator_url, "/chat/completions")
    pages = Pages(page_for(proxy_url), allowed_port)
    try:
        report = visit(f"http://localhost:{allowed_port}/", pages)
    finally:
        pages.close()
    assert report["json_fetch"].get("status") == 200, report
    assert report["json_fetch"]["body"]["object"] == "chat.completion", report
    # The simple POST is forwarded too; the rebinding POST names another host and is still
    # refused. (The WebSocket upgrade passes the guard; proxying WebSockets is another issue.)
    assert inference_count(emulator_url, "/chat/completions") == before + 2, report

