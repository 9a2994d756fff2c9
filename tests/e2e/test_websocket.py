"""WebSockets through the real binary: the official `openai` package's realtime client
(`client.realtime.connect`, also from an `AzureOpenAI` client), the Responses WebSocket mode driven
by the `websockets` package (what Codex speaks), the 426 for an upgrade the proxy cannot serve, and
a missing-role refusal explained at the handshake."""

from __future__ import annotations

import json
import signal

import openai
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from conftest import DEMO, HTTP_TIMEOUT, STOP_TIMEOUT, Running, serve_env, start_emulator, start_serve

CHAT = DEMO["CHAT_DEPLOYMENT"]


def ws_url(running: Running, path: str) -> str:
    return running.proxy_url.replace("http://", "ws://", 1) + path


def realtime_answer(connection) -> tuple[str, dict]:
    """Sends one user text and a response.create; returns the joined deltas and response.done."""
    connection.conversation.item.create(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi realtime"}]})
    connection.response.create()
    deltas: list[str] = []
    for event in connection:
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        elif event.type == "response.done":
            return "".join(deltas), event.response.usage.model_dump()
        elif event.type == "error":
            pytest.fail(f"error event: {event}")
    pytest.fail("the socket closed before response.done")


def test_openai_realtime_client(demo: Running) -> None:
    """`OpenAI(base_url=…/v1).realtime.connect(model=…)`: the SDK's own socket, any API key."""
    client = openai.OpenAI(base_url=demo.base_url, api_key="unused-the-proxy-adds-entra", max_retries=0)
    with client.realtime.connect(model=CHAT) as connection:
        first = connection.recv()
        assert first.type == "session.created"
        text, usage = realtime_answer(connection)
    assert text.endswith("You said: hi realtime")
    assert usage["total_tokens"] > 0
    seen = [r for r in demo.emulator_state()["inference_requests"] if r["path"].endswith("/realtime")]
    assert seen and seen[-1]["status"] == 101
    assert seen[-1]["token_appid"] == DEMO["CLIENT_ID"]


def test_azure_openai_realtime_client(demo: Running) -> None:
    """`AzureOpenAI(azure_endpoint=proxy).realtime.connect(model=DEPLOYMENT)`: the Azure path
    `/openai/realtime?api-version=…&deployment=…`. The SDK dials `wss://` unless given
    `websocket_base_url` (the proxy listens on plain HTTP)."""
    client = openai.AzureOpenAI(azure_endpoint=demo.proxy_url, api_key="unused-the-proxy-adds-entra",
                                api_version="2025-04-01-preview", max_retries=0,
                                websocket_base_url=ws_url(demo, "/openai"))
    with client.realtime.connect(model=CHAT) as connection:
        assert connection.recv().type == "session.created"
        text, _ = realtime_answer(connection)
    assert text.endswith("You said: hi realtime")


def test_responses_websocket_mode(demo: Running) -> None:
    """Codex's transport: `response.create` frames on `ws://…/v1/responses`, answered with the
    Responses stream's events; two responses on one socket."""
    with connect(ws_url(demo, "/v1/responses"), open_timeout=HTTP_TIMEOUT) as socket:
        for n in range(2):
            socket.send(json.dumps({"type": "response.create", "model": CHAT, "input": f"turn {n}"}))
            types = []
            while True:
                event = json.loads(socket.recv(timeout=HTTP_TIMEOUT))
                types.append(event["type"])
                if event["type"] == "response.completed":
                    break
            assert types[0] == "response.created"
            assert "response.output_text.delta" in types
            assert event["response"]["usage"]["total_tokens"] > 0
            assert f"turn {n}" in event["response"]["output"][0]["content"][0]["text"]


def test_unservable_upgrade_is_426(demo: Running) -> None:
    """An upgrade on a route without a WebSocket mode is 426 with the explanation (Codex then
    uses HTTP)."""
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(demo, "/v1/chat/completions"), open_timeout=HTTP_TIMEOUT)
    response = refused.value.response
    assert response.status_code == 426
    assert json.loads(response.body)["error"]["code"] == "websocket_not_supported"


def test_missing_role_is_explained_at_the_handshake(no_role: Running) -> None:
    """A principal without an inference role: the handshake is refused with the same explanation
    the HTTP path gives."""
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(no_role, f"/v1/realtime?model={CHAT}"), open_timeout=HTTP_TIMEOUT)
    response = refused.value.response
    assert response.status_code == 401
    error = json.loads(response.body)["error"]
    assert error["code"] == "missing_role_assignment"
    assert error["fix"]


def test_sigterm_closes_open_sockets_with_1001() -> None:
    """SIGTERM to `foundry-proxy serve` with open sockets: each client gets a close frame with
    1001 and a reason, and the process exits 0 within its grace."""
    emulator, emulator_url = start_emulator()
    proxy = None
    try:
        proxy, proxy_url = start_serve(
            serve_env(emulator_url, DEMO["CLIENT_ID"], DEMO["CLIENT_SECRET"]), "serve-ws-sigterm")
        ready = Running(proxy_url, emulator_url, proxy.wait_ready(proxy_url), [proxy])
        sockets = [connect(ws_url(ready, path), open_timeout=HTTP_TIMEOUT)
                   for path in (f"/v1/realtime?model={CHAT}", "/v1/responses", "/openai/v1/responses")]
        assert json.loads(sockets[0].recv(timeout=HTTP_TIMEOUT))["type"] == "session.created"
        proxy.proc.send_signal(signal.SIGTERM)
        for socket in sockets:
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    socket.recv(timeout=HTTP_TIMEOUT)
            assert closed.value.rcvd is not None, "no close frame"
            assert closed.value.rcvd.code == 1001
            assert "shutting down" in closed.value.rcvd.reason
        assert proxy.proc.wait(timeout=STOP_TIMEOUT) == 0
    finally:
        if proxy is not None:
            proxy.stop()
        emulator.stop()
