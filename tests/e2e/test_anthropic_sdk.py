"""The official `anthropic` package against the proxy, the emulator playing Claude on Foundry:
create, the SDK's stream helpers, count_tokens, a tool-use round trip, the SDK's Foundry client
pointed at `…/anthropic`, a missing-role refusal whose explanation the SDK prints, and a per-key
token limit enforced from Claude's usage."""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import anthropic
import httpx2 as httpx
import pytest

from conftest import (HTTP_TIMEOUT, Running, clean_env, proxy_binary, serve_env, start_emulator,
                      start_serve, DEMO)

CLAUDE = re.search(r'pub const CLAUDE_DEPLOYMENT: &str = "([^"]*)";',
                   (Path(__file__).resolve().parents[2] / "src" / "emulator" / "identities.rs")
                   .read_text(encoding="utf-8")).group(1)
HELLO = [{"role": "user", "content": "Hello from the Anthropic SDK"}]


def claude(proxy_url: str, api_key: str = "unused-the-proxy-adds-entra", **kwargs: object) -> anthropic.Anthropic:
    """What `ANTHROPIC_BASE_URL=http://127.0.0.1:8080` sets up: the plain client, any key."""
    return anthropic.Anthropic(base_url=proxy_url, api_key=api_key, max_retries=0, timeout=HTTP_TIMEOUT,
                               http_client=httpx.Client(trust_env=False), **kwargs)


@pytest.fixture(scope="module")
def client(demo: Running) -> Iterator[anthropic.Anthropic]:
    with claude(demo.proxy_url) as c:
        yield c


def test_create(demo: Running, client: anthropic.Anthropic) -> None:
    """`messages.create` through `/v1/messages`, sent to `/anthropic/v1/messages` upstream."""
    before = len(demo.emulator_state()["inference_requests"])
    message = client.messages.create(model=CLAUDE, max_tokens=256, messages=HELLO)
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text" and message.content[0].text
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    seen = demo.emulator_state()["inference_requests"][before:]
    assert [r["path"] for r in seen] == ["/anthropic/v1/messages"], seen
    headers = {k.lower(): v for k, v in seen[0]["headers"]}
    assert "x-api-key" not in headers and headers.get("anthropic-version"), headers


def test_stream_helpers(client: anthropic.Anthropic) -> None:
    """`messages.stream(...)`: text_stream and the final message, usage included."""
    with client.messages.stream(model=CLAUDE, max_tokens=256, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0


def test_count_tokens(client: anthropic.Anthropic) -> None:
    counted = client.messages.count_tokens(model=CLAUDE, messages=HELLO)
    message = client.messages.create(model=CLAUDE, max_tokens=256, messages=HELLO)
    assert counted.input_tokens == message.usage.input_tokens


def test_tool_use_round_trip(client: anthropic.Anthropic) -> None:
    """The model asks for a tool; its result goes back; the model answers in text."""
    tools = [{
        "name": "get_weather",
        "description": "The weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }]
    ask = [{"role": "user", "content": "What is the weather in Paris? Use get_weather."}]
    first = client.messages.create(model=CLAUDE, max_tokens=256, tools=tools, messages=ask)
    assert first.stop_reason == "tool_use", first
    use = next(b for b in first.content if b.type == "tool_use")
    assert use.name == "get_weather" and isinstance(use.input, dict)
    second = client.messages.create(model=CLAUDE, max_tokens=256, tools=tools, messages=[
        *ask,
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18°C, sunny"}]},
    ])
    assert second.stop_reason == "end_turn", second
    assert any(b.type == "text" and b.text for b in second.content)


def test_foundry_client(demo: Running) -> None:
    """`AnthropicFoundry(base_url=…/anthropic)`: what `ANTHROPIC_FOUNDRY_BASE_URL` with
    `CLAUDE_CODE_SKIP_FOUNDRY_AUTH=1` sets up in Claude Code."""
    before = len(demo.emulator_state()["inference_requests"])
    with anthropic.AnthropicFoundry(base_url=f"{demo.proxy_url}/anthropic", api_key="unused", max_retries=0,
                                    timeout=HTTP_TIMEOUT, http_client=httpx.Client(trust_env=False)) as foundry:
        message = foundry.messages.create(model=CLAUDE, max_tokens=256, messages=HELLO)
        with foundry.messages.stream(model=CLAUDE, max_tokens=64, messages=HELLO) as stream:
            streamed = "".join(stream.text_stream)
    assert message.content[0].text and streamed
    seen = demo.emulator_state()["inference_requests"][before:]
    assert [r["path"] for r in seen] == ["/anthropic/v1/messages"] * 2, seen


def test_missing_role_is_explained(no_role: Running) -> None:
    """An app without a role: the SDK raises its own exception class, and its text names the
    role, where to assign it and the first step."""
    with claude(no_role.proxy_url) as client:
        with pytest.raises(anthropic.APIStatusError) as caught:
            client.messages.create(model=CLAUDE, max_tokens=64, messages=HELLO)
    err = caught.value
    assert isinstance(err, (anthropic.AuthenticationError, anthropic.PermissionDeniedError)), type(err)
    body = err.body
    assert isinstance(body, dict) and body["type"] == "error", body
    assert body["error"]["code"] == "missing_role_assignment", body
    message = str(err)
    assert "Azure AI User" in message and "Fix: " in message, message


@pytest.fixture(scope="module")
def keyed() -> Iterator[tuple[str, str]]:
    """A proxy with one access key limited to 60 tokens a minute; yields its URL and the key."""
    keys = Path(tempfile.mkdtemp(prefix="fp-e2e-claude-")) / "keys.toml"
    added = subprocess.run([str(proxy_binary()), "keys", "add", "erin", "--tpm", "60", "--file", str(keys)],
                           env=clean_env(), capture_output=True, text=True, timeout=HTTP_TIMEOUT, check=True)
    key = added.stdout.strip()
    emulator, emulator_url = start_emulator()
    proxy = None
    try:
        proxy, proxy_url = start_serve(serve_env(emulator_url, DEMO["CLIENT_ID"], DEMO["CLIENT_SECRET"],
                                                 FOUNDRY_PROXY_KEYS_FILE=str(keys)), "serve-claude-keys")
        proxy.wait_ready(proxy_url)
        yield proxy_url, key
    finally:
        if proxy is not None:
            proxy.stop()
        emulator.stop()


def test_token_limit_from_claude_usage(keyed: tuple[str, str]) -> None:
    """The key goes in `ANTHROPIC_API_KEY` (sent as `x-api-key`); Claude's reported usage spends
    its tokens-per-minute, and then the SDK raises RateLimitError with the proxy's explanation."""
    proxy_url, key = keyed
    with claude(proxy_url, api_key="fpk-not-a-key") as stranger:
        with pytest.raises(anthropic.AuthenticationError):
            stranger.messages.create(model=CLAUDE, max_tokens=64, messages=HELLO)
    with claude(proxy_url, api_key=key) as client:
        with pytest.raises(anthropic.RateLimitError) as caught:
            for _ in range(20):
                with client.messages.stream(model=CLAUDE, max_tokens=256, messages=HELLO) as stream:
                    stream.until_done()
    err = caught.value
    assert err.body["error"]["code"] == "token_limit_exceeded", err.body
    assert err.body["error"]["type"] == "rate_limit_error"
    assert "erin" in str(err), str(err)
