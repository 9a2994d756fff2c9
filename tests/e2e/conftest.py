"""Fixtures for the end-to-end tests: run the real `foundry-proxy` binary and talk to it over HTTP.

The binary comes from FOUNDRY_PROXY_BIN (default: target/debug/foundry-proxy in the repository).
Every process listens on 127.0.0.1 port 0; the fixtures read the printed addresses, wait for
`/readyz` (bounded), and stop the process at the end (SIGTERM, then SIGKILL after a timeout).
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import openai
import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO_RS = REPO / "src" / "emulator" / "identities.rs"

# Bounds on everything that waits.
START_TIMEOUT = 20.0  # until the addresses are printed
READY_TIMEOUT = 20.0  # until /readyz answers 200
STOP_TIMEOUT = 10.0  # SIGTERM grace before SIGKILL
HTTP_TIMEOUT = 15.0  # any single HTTP request from the tests

# Environment the proxy reads; cleared so a developer's own settings cannot leak into a test.
PROXY_ENV_PREFIXES = ("AZURE_", "FOUNDRY_", "OPENAI_", "ANTHROPIC_")
# A request through a local HTTP proxy would not test foundry-proxy at all.
PROXY_ENV_NAMES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}

URL_RE = r"(http://127\.0\.0\.1:\d+)"


def proxy_binary() -> Path:
    path = Path(os.environ.get("FOUNDRY_PROXY_BIN", REPO / "target" / "debug" / "foundry-proxy"))
    if not path.is_absolute():
        path = (REPO / path).resolve()
    if not path.is_file():
        pytest.exit(f"foundry-proxy binary not found at {path}: run `cargo build` or set FOUNDRY_PROXY_BIN", returncode=2)
    return path


def demo_constants() -> dict[str, str]:
    """The demo world's identities, read from src/emulator/identities.rs (the single source of truth)."""
    text = DEMO_RS.read_text(encoding="utf-8")
    consts = dict(re.findall(r'pub const (\w+): &str = "([^"]*)";', text))
    needed = {"TENANT_ID", "CLIENT_ID", "CLIENT_SECRET", "OBJECT_ID", "NO_ROLE_CLIENT_ID",
              "NO_ROLE_CLIENT_SECRET", "NO_ROLE_OBJECT_ID", "CHAT_DEPLOYMENT", "EMBEDDING_DEPLOYMENT",
              "TRANSCRIPTION_DEPLOYMENT", "IMAGE_DEPLOYMENT", "SCOPE"}
    missing = needed - consts.keys()
    if missing:
        pytest.exit(f"{DEMO_RS} no longer defines {sorted(missing)}", returncode=2)
    return consts


DEMO = demo_constants()


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.upper().startswith(PROXY_ENV_PREFIXES) and k.lower() not in PROXY_ENV_NAMES}
    env.setdefault("RUST_LOG", "info")
    env.update(extra)
    return env


# ---------------------------------------------------------------------------------------------
# Plain HTTP helpers (stdlib only, never through an environment proxy)
# ---------------------------------------------------------------------------------------------

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class HttpAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
         form: dict[str, str] | None = None, timeout: float = HTTP_TIMEOUT) -> HttpAnswer:
    """One HTTP request; any status is returned, never raised."""
    headers = dict(headers or {})
    data = None
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers.setdefault("content-type", "application/x-www-form-urlencoded")
    elif body is not None:
        data = json.dumps(body).encode()
        headers.setdefault("content-type", "application/json")
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return HttpAnswer(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
    except urllib.error.HTTPError as e:
        return HttpAnswer(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


# ---------------------------------------------------------------------------------------------
# Running the binary
# ---------------------------------------------------------------------------------------------

class Process:
    """A running foundry-proxy command whose stdout is read line by line in the background."""

    def __init__(self, args: list[str], env: dict[str, str], name: str):
        self.name = name
        self.args = args
        self._stderr = tempfile.NamedTemporaryFile(prefix=f"foundry-proxy-{name}-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [str(proxy_binary()), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            cwd=REPO,
            text=True,
            bufsize=1,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.stdout: list[str] = []
        self._reader = threading.Thread(target=self._read, name=f"{name}-stdout", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def stderr_text(self) -> str:
        self._stderr.flush()
        return Path(self._stderr.name).read_text(encoding="utf-8", errors="replace")

    def describe(self) -> str:
        return (f"`foundry-proxy {' '.join(self.args)}` (exit code {self.proc.poll()})\n"
                f"--- stdout ---\n" + "\n".join(self.stdout) + "\n--- stderr (tail) ---\n"
                + "\n".join(self.stderr_text().splitlines()[-40:]))

    def wait_for(self, pattern: str, timeout: float = START_TIMEOUT) -> re.Match[str]:
        """The first stdout line (seen so far or arriving before `timeout`) matching `pattern`."""
        regex = re.compile(pattern)
        for line in self.stdout:
            if m := regex.search(line):
                return m
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=min(left, 0.2))
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"process ended before printing /{pattern}/:\n{self.describe()}")
            self.stdout.append(line)
            if m := regex.search(line):
                return m
        raise AssertionError(f"no line matching /{pattern}/ within {timeout}s:\n{self.describe()}")

    def wait_ready(self, base_url: str, timeout: float = READY_TIMEOUT) -> dict[str, Any]:
        """Polls `/readyz` until 200 and returns its JSON."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"process exited while waiting for /readyz:\n{self.describe()}")
            try:
                answer = http("GET", f"{base_url}/readyz", timeout=2)
                if answer.status == 200:
                    return answer.json()
                last = f"{answer.status} {answer.body[:500]!r}"
            except OSError as e:
                last = repr(e)
            time.sleep(0.1)
        raise AssertionError(f"/readyz not 200 within {timeout}s (last: {last}):\n{self.describe()}")

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
        self._reader.join(timeout=2)
        if self.proc.stdout:
            self.proc.stdout.close()
        self._stderr.close()
        Path(self._stderr.name).unlink(missing_ok=True)
        return self.proc.returncode


@dataclass
class Running:
    """A proxy (and the emulator behind it) ready for requests."""

    proxy_url: str  # http://127.0.0.1:PORT (append /v1 for the OpenAI base URL)
    emulator_url: str
    readyz: dict[str, Any]
    processes: list[Process]

    @property
    def base_url(self) -> str:
        return f"{self.proxy_url}/v1"

    def client(self, **kwargs: Any) -> openai.OpenAI:
        return make_client(self.base_url, **kwargs)

    # The emulator's control endpoint --------------------------------------------------------
    def emulator_state(self) -> dict[str, Any]:
        answer = http("GET", f"{self.emulator_url}/_emulator/state")
        assert answer.status == 200, answer
        return answer.json()

    def emulator_config(self, update: dict[str, Any]) -> None:
        answer = http("POST", f"{self.emulator_url}/_emulator/config", body=update)
        assert answer.status in (200, 204), f"/_emulator/config {update}: {answer.status} {answer.body!r}"

    def emulator_reset(self) -> None:
        answer = http("POST", f"{self.emulator_url}/_emulator/reset")
        assert answer.status in (200, 204), answer

    def direct_token(self, client_id: str = DEMO["CLIENT_ID"], secret: str = DEMO["CLIENT_SECRET"]) -> str:
        """A token straight from the emulator's Entra endpoint, to compare the proxy with Azure itself."""
        answer = http("POST", f"{self.emulator_url}/{DEMO['TENANT_ID']}/oauth2/v2.0/token", form={
            "grant_type": "client_credentials", "client_id": client_id, "client_secret": secret,
            "scope": DEMO["SCOPE"]})
        assert answer.status == 200, answer
        return answer.json()["access_token"]

    def direct_upstream(self, path: str, body: Any, headers: dict[str, str] | None = None) -> HttpAnswer:
        """A request straight to the emulated Foundry (bypassing the proxy), with a valid token."""
        headers = {"authorization": f"Bearer {self.direct_token()}", **(headers or {})}
        return http("POST", f"{self.emulator_url}/openai/v1/{path}", body=body, headers=headers)


def make_client(base_url: str, **kwargs: Any) -> openai.OpenAI:
    """An OpenAI SDK client for the proxy: no retries (so refusals surface at once), bounded time."""
    options: dict[str, Any] = {
        "base_url": base_url,
        # Any key works: the proxy drops it and sends its own Entra token.
        "api_key": "sk-e2e-this-key-must-never-reach-azure",
        "max_retries": 0,
        "timeout": HTTP_TIMEOUT,
        "http_client": openai.DefaultHttpxClient(trust_env=False),
    }
    options.update(kwargs)
    return openai.OpenAI(**options)


def start_demo() -> tuple[Process, str, str]:
    process = Process(["demo", "--listen", "127.0.0.1:0"], clean_env(), "demo")
    try:
        emulator_url = process.wait_for(rf"emulator listening on {URL_RE}").group(1)
        proxy_url = process.wait_for(rf"foundry-proxy listening on {URL_RE}").group(1)
    except BaseException:
        process.stop()
        raise
    return process, proxy_url, emulator_url


def start_emulator() -> tuple[Process, str]:
    process = Process(["emulate", "--listen", "127.0.0.1:0"], clean_env(), "emulate")
    try:
        return process, process.wait_for(rf"emulator listening on {URL_RE}").group(1)
    except BaseException:
        process.stop()
        raise


def serve_env(emulator_url: str, client_id: str, secret: str, **extra: str) -> dict[str, str]:
    return clean_env(
        FOUNDRY_PROXY_LISTEN="127.0.0.1:0",
        AZURE_AUTHORITY_HOST=emulator_url,
        FOUNDRY_ENDPOINT=emulator_url,
        AZURE_TENANT_ID=DEMO["TENANT_ID"],
        AZURE_CLIENT_ID=client_id,
        AZURE_CLIENT_SECRET=secret,
        **extra,
    )


def start_serve(env: dict[str, str], name: str = "serve") -> tuple[Process, str]:
    process = Process(["serve"], env, name)
    try:
        return process, process.wait_for(rf"foundry-proxy listening on {URL_RE}").group(1)
    except BaseException:
        process.stop()
        raise


@pytest.fixture(scope="session")
def demo() -> Iterator[Running]:
    """`foundry-proxy demo`: emulator and proxy in one process, the demo app holding its role."""
    process, proxy_url, emulator_url = start_demo()
    try:
        readyz = process.wait_ready(proxy_url)
        yield Running(proxy_url, emulator_url, readyz, [process])
    finally:
        process.stop()


@pytest.fixture(scope="session")
def no_role() -> Iterator[Running]:
    """`foundry-proxy emulate` plus a separate `foundry-proxy serve` signed in as the NO_ROLE app
    (it has only "Contributor", which grants no inference data actions)."""
    emulator, emulator_url = start_emulator()
    proxy = None
    try:
        proxy, proxy_url = start_serve(
            serve_env(emulator_url, DEMO["NO_ROLE_CLIENT_ID"], DEMO["NO_ROLE_CLIENT_SECRET"]), "serve-no-role")
        readyz = proxy.wait_ready(proxy_url)
        yield Running(proxy_url, emulator_url, readyz, [proxy, emulator])
    finally:
        if proxy is not None:
            proxy.stop()
        emulator.stop()


@pytest.fixture(scope="session")
def client(demo: Running) -> Iterator[openai.OpenAI]:
    """The OpenAI SDK pointed at the demo proxy."""
    with demo.client() as c:
        yield c


@dataclass
class Emulator:
    """A running `foundry-proxy emulate` (no proxy), with its control endpoint."""

    url: str
    process: Process

    def config(self, update: dict[str, Any]) -> None:
        answer = http("POST", f"{self.url}/_emulator/config", body=update)
        assert answer.status in (200, 204), f"/_emulator/config {update}: {answer.status} {answer.body!r}"

    def state(self) -> dict[str, Any]:
        answer = http("GET", f"{self.url}/_emulator/state")
        assert answer.status == 200, answer
        return answer.json()


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    """`foundry-proxy emulate` alone, for tests that start their own short-lived `serve` against it
    (e.g. with an Entra fault in place before the proxy's first token request). Module-scoped: tests
    that change its controls restore them."""
    process, url = start_emulator()
    try:
        yield Emulator(url, process)
    finally:
        process.stop()
