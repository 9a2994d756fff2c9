"""The official OpenAI Python SDK, unmodified, against foundry-proxy in front of the built-in emulator.

These tests are what a user does: point `OpenAI(base_url=...)` at the proxy with any API key and call the
usual methods. They check the answers, that streams really stream, and that refusals surface as the SDK's
own exception classes with the proxy's explanation (or Azure's body, untouched, where nothing is to explain).
"""

from __future__ import annotations

import base64
import math
import time
import uuid

import openai
import pytest

from conftest import DEMO, Running

CHAT = DEMO["CHAT_DEPLOYMENT"]
EMBEDDING = DEMO["EMBEDDING_DEPLOYMENT"]
# Roles the proxy's explanation must name (any one of them grants inference).
ROLE_NAMES = ("Azure AI User", "Azure AI Developer", "Cognitive Services OpenAI User")


def marker() -> dict[str, str]:
    """A unique header to find this request among the emulator's records."""
    return {"x-e2e-request": uuid.uuid4().hex}


def records_with(running: Running, header: dict[str, str]) -> list[dict]:
    (name, value), = header.items()
    return [r for r in running.emulator_state()["inference_requests"] if [name, value] in r["headers"]]


# --------------------------------------------------------------------------------------------------
# Readiness and plumbing
# --------------------------------------------------------------------------------------------------

def test_readyz_reports_the_demo_identity(demo: Running) -> None:
    """/readyz is 200 once the proxy holds a token, and names the app and service principal in it."""
    identity = demo.readyz["identity"]
    assert identity["app_id"] == DEMO["CLIENT_ID"]
    assert identity["object_id"] == DEMO["OBJECT_ID"]


def test_caller_api_key_is_replaced_by_the_entra_token(demo: Running, client: openai.OpenAI) -> None:
    """The SDK's own API key never reaches Azure: upstream sees only the proxy's Entra token for the demo app."""
    tag = marker()
    client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "who am I?"}], extra_headers=tag)
    records = records_with(demo, tag)
    assert len(records) == 1, f"expected exactly one upstream request tagged {tag}, got {records}"
    record = records[0]
    assert record["authorization_present"] is True
    assert record["token_appid"] == DEMO["CLIENT_ID"], "upstream did not get a token of the proxy's app"
    assert record["token_oid"] == DEMO["OBJECT_ID"]
    names = {name.lower() for name, _ in record["headers"]}
    assert "api-key" not in names
    assert record["path"] == "/openai/v1/chat/completions"


# --------------------------------------------------------------------------------------------------
# Chat Completions
# --------------------------------------------------------------------------------------------------

def test_chat_completion(client: openai.OpenAI) -> None:
    """A plain chat completion comes back parsed by the SDK, answering the prompt, with usage."""
    prompt = "Say hello to the e2e suite"
    completion = client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": prompt}])
    assert completion.object == "chat.completion"
    assert completion.model.startswith("gpt-4o-mini")
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert prompt in (choice.message.content or "")
    assert completion.usage is not None and completion.usage.total_tokens > 0


def test_streaming_chat_joins_to_the_full_answer(client: openai.OpenAI) -> None:
    """stream=True yields several chunk events whose deltas join into exactly the non-streamed answer."""
    prompt = "count one two three four five"
    messages = [{"role": "user", "content": prompt}]
    expected = client.chat.completions.create(model=CHAT, messages=messages).choices[0].message.content

    pieces: list[str] = []
    finish_reasons: list[str] = []
    usage = None
    with client.chat.completions.create(model=CHAT, messages=messages, stream=True,
                                        stream_options={"include_usage": True}) as stream:
        for chunk in stream:
            assert chunk.object in ("chat.completion.chunk", "")  # Azure opens with a filter-only frame
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                if choice.delta.content:
                    pieces.append(choice.delta.content)
                if choice.finish_reason:
                    finish_reasons.append(choice.finish_reason)
    assert len(pieces) >= 3, f"expected several content chunks, got {pieces}"
    assert "".join(pieces) == expected
    assert finish_reasons == ["stop"]
    assert usage is not None and usage.completion_tokens > 0


def test_streaming_chat_is_not_buffered(client: openai.OpenAI) -> None:
    """Chunks reach the SDK as the upstream sends them: with 250 ms between upstream frames, the first
    content chunk arrives well before the last (a proxy that buffered the body would deliver all at once)."""
    arrivals: list[float] = []
    stream = client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "slowly"}], stream=True,
        extra_headers={"x-emulator-chunks": "5", "x-emulator-chunk-delay-ms": "250"})
    with stream:
        for chunk in stream:
            if any(c.delta.content for c in chunk.choices):
                arrivals.append(time.monotonic())
    assert len(arrivals) == 5
    spread = arrivals[-1] - arrivals[0]
    assert spread >= 0.5, f"5 chunks sent 250 ms apart arrived within {spread:.3f}s: the stream was buffered"


# --------------------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------------------

def _norm(vector: list[float]) -> float:
    return math.sqrt(sum(x * x for x in vector))


def test_embeddings_default_base64_and_float_agree(client: openai.OpenAI) -> None:
    """The SDK's default (it asks for base64 and decodes it) and encoding_format="float" give the same
    1536-dimension unit vectors, in input order."""
    inputs = ["the quick brown fox", "jumps over the lazy dog"]

    raw = client.embeddings.with_raw_response.create(model=EMBEDDING, input=inputs)
    wire = raw.http_response.json()
    assert isinstance(wire["data"][0]["embedding"], str), "SDK default should travel as base64 text"
    default = raw.parse()

    as_float = client.embeddings.create(model=EMBEDDING, input=inputs, encoding_format="float")
    assert [d.index for d in default.data] == [0, 1]
    assert [d.index for d in as_float.data] == [0, 1]
    for decoded, floats in zip(default.data, as_float.data):
        assert len(decoded.embedding) == 1536
        assert len(floats.embedding) == 1536
        assert all(isinstance(x, float) for x in floats.embedding[:10])
        assert _norm(floats.embedding) == pytest.approx(1.0, abs=1e-3)
        assert decoded.embedding == pytest.approx(floats.embedding, abs=1e-6)
    assert default.data[0].embedding != pytest.approx(default.data[1].embedding, abs=1e-3)
    assert as_float.usage.prompt_tokens > 0


# --------------------------------------------------------------------------------------------------
# Responses API
# --------------------------------------------------------------------------------------------------

def test_responses_create_output_text(client: openai.OpenAI) -> None:
    """client.responses.create returns a completed response whose output_text answers the input."""
    prompt = "Responses API through the proxy"
    response = client.responses.create(model=CHAT, input=prompt)
    assert response.status == "completed"
    assert response.id.startswith("resp_")
    assert prompt in response.output_text
    assert response.usage is not None and response.usage.output_tokens > 0


def test_responses_streaming_events(client: openai.OpenAI) -> None:
    """Streaming the Responses API yields OpenAI's typed events in order; the text deltas join into the
    final response's output_text."""
    prompt = "stream the responses API"
    types: list[str] = []
    deltas: list[str] = []
    final = None
    with client.responses.create(model=CHAT, input=prompt, stream=True) as stream:
        for event in stream:
            types.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
            elif event.type == "response.completed":
                final = event.response
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"
    assert types.count("response.output_text.delta") >= 3
    assert types.index("response.output_text.done") > types.index("response.output_text.delta")
    assert final is not None and final.status == "completed"
    assert "".join(deltas) == final.output_text
    assert prompt in final.output_text


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------

def test_models_list(client: openai.OpenAI) -> None:
    """client.models.list() pages through the resource's deployments."""
    ids = {model.id for model in client.models.list()}
    expected = {DEMO["CHAT_DEPLOYMENT"], DEMO["EMBEDDING_DEPLOYMENT"], DEMO["TRANSCRIPTION_DEPLOYMENT"],
                DEMO["IMAGE_DEPLOYMENT"]}
    assert expected <= ids


# --------------------------------------------------------------------------------------------------
# Audio and images
# --------------------------------------------------------------------------------------------------

def test_audio_transcription_multipart_upload(client: openai.OpenAI) -> None:
    """A multipart upload (client.audio.transcriptions.create) reaches the whisper deployment intact:
    the transcription names the uploaded file and its exact size."""
    audio = b"RIFF" + bytes(range(256)) * 64  # 16388 bytes, not real audio; the emulator only counts them
    transcript = client.audio.transcriptions.create(model=DEMO["TRANSCRIPTION_DEPLOYMENT"],
                                                    file=("e2e-sample.wav", audio, "audio/wav"))
    assert "e2e-sample.wav" in transcript.text
    assert f"({len(audio)} bytes)" in transcript.text


def test_image_generation(client: openai.OpenAI) -> None:
    """client.images.generate against the dall-e-3 deployment returns the requested number of base64 images."""
    result = client.images.generate(model=DEMO["IMAGE_DEPLOYMENT"], prompt="a lighthouse", n=2,
                                    response_format="b64_json")
    assert len(result.data) == 2
    png = base64.b64decode(result.data[0].b64_json or "")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


# --------------------------------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------------------------------

def _assert_missing_role(err: openai.AuthenticationError, object_id: str, app_id: str) -> None:
    assert err.status_code == 401
    message = str(err)
    assert "Access control (IAM)" in message
    for role in ROLE_NAMES:
        assert role in message, f"message does not name the role {role!r}: {message}"
    assert object_id in message
    body = err.body
    assert isinstance(body, dict), body
    assert body["code"] == "missing_role_assignment"
    assert err.code == "missing_role_assignment"
    assert body["type"] == "authentication_error"
    assert isinstance(body["fix"], list) and body["fix"], body
    assert body["upstream"]["status"] == 401
    assert body["upstream"]["body"]["error"]["code"] == "PermissionDenied"
    assert body["identity"]["app_id"] == app_id
    assert body["identity"]["object_id"] == object_id


def test_missing_role_with_an_app_that_has_none(no_role: Running) -> None:
    """A separate `serve` signed in as an app with only "Contributor": the SDK raises AuthenticationError
    whose message says which roles to assign in Access control (IAM), with code missing_role_assignment."""
    assert no_role.readyz["identity"]["app_id"] == DEMO["NO_ROLE_CLIENT_ID"]
    with no_role.client() as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "hi"}])
    _assert_missing_role(caught.value, DEMO["NO_ROLE_OBJECT_ID"], DEMO["NO_ROLE_CLIENT_ID"])


def test_missing_role_after_the_role_is_removed(demo: Running, client: openai.OpenAI) -> None:
    """Removing the demo app's role assignment (emulator control endpoint) turns the next request into the
    explained missing_role_assignment 401; restoring it makes requests succeed again, without a restart."""
    messages = [{"role": "user", "content": "role check"}]
    demo.emulator_config({"roles": {DEMO["CLIENT_ID"]: []}})
    try:
        with pytest.raises(openai.AuthenticationError) as caught:
            client.chat.completions.create(model=CHAT, messages=messages)
    finally:
        # The demo world gives the app "Azure AI User" (src/emulator/config.rs).
        demo.emulator_config({"roles": {DEMO["CLIENT_ID"]: ["Azure AI User"]}})
    _assert_missing_role(caught.value, DEMO["OBJECT_ID"], DEMO["CLIENT_ID"])
    assert client.chat.completions.create(model=CHAT, messages=messages).choices[0].message.content


def test_rate_limit_is_explained_with_retry_after(demo: Running, client: openai.OpenAI) -> None:
    """Azure's quota 429 reaches the SDK as RateLimitError with retry-after, the x-ratelimit-*
    headers, Azure's body kept under `upstream`, and which kind of 429 it is in the message
    (max_retries=0, so the SDK does not wait and retry)."""
    request = {"model": CHAT, "messages": [{"role": "user", "content": "too much"}]}
    fault = {"x-emulator-fault": "rate-limit"}
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(**request, extra_headers=fault)
    err = caught.value
    assert err.status_code == 429
    headers = err.response.headers
    assert headers.get("retry-after") == "45"
    assert headers.get("x-ratelimit-remaining-requests") == "0"
    assert headers.get("x-ratelimit-remaining-tokens") == "0"
    assert headers.get("apim-request-id")

    assert headers.get("retry-after-ms") == "45000"
    assert err.code == "deployment_quota_exceeded"
    assert "quota" in str(err) and "Fix: " in str(err), str(err)

    direct = demo.direct_upstream("chat/completions", request, fault)
    assert direct.status == 429
    assert err.body["upstream"]["body"] == direct.json(), "the proxy changed Azure's 429 body"


def test_content_filter_400_passes_through_unchanged(demo: Running, client: openai.OpenAI) -> None:
    """A prompt blocked by Azure's content filter arrives as BadRequestError with Azure's body exactly as
    Azure sent it (code content_filter, innererror with the filter verdicts)."""
    request = {"model": CHAT, "messages": [{"role": "user", "content": "something the filter blocks"}]}
    fault = {"x-emulator-fault": "content-filter"}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**request, extra_headers=fault)
    err = caught.value
    assert err.status_code == 400
    assert err.code == "content_filter"
    body = err.response.json()
    assert body["error"]["code"] == "content_filter"
    assert body["error"]["innererror"]["code"] == "ResponsibleAIPolicyViolation"
    assert body["error"]["innererror"]["content_filter_result"]["violence"]["filtered"] is True

    direct = demo.direct_upstream("chat/completions", request, fault)
    assert direct.status == 400
    assert body == direct.json(), "the proxy changed Azure's content-filter body"
