"""The official `openai` package configured the Azure way, against the proxy: `AzureOpenAI` (sync,
async, streaming, embeddings, responses, a refusal whose explanation the SDK prints),
`OpenAI(base_url=…/openai/v1)` as Microsoft's v1 samples configure it, and a Foundry project
endpoint chosen from FOUNDRY_ENDPOINT alone."""

from __future__ import annotations

import asyncio
from typing import Iterator

import openai
import pytest

from conftest import DEMO, HTTP_TIMEOUT, Emulator, Running, serve_env, start_serve

CHAT = DEMO["CHAT_DEPLOYMENT"]
API_VERSION = "2024-10-21"
MESSAGES = [{"role": "user", "content": "Hello from AzureOpenAI"}]


def azure_client(proxy_url: str, **kwargs: object) -> openai.AzureOpenAI:
    """What a user who had an API key configured changes: only the endpoint (any key works)."""
    return openai.AzureOpenAI(azure_endpoint=proxy_url, api_key="unused-the-proxy-adds-entra",
                              api_version=API_VERSION, max_retries=0, timeout=HTTP_TIMEOUT,
                              http_client=openai.DefaultHttpxClient(trust_env=False), **kwargs)


@pytest.fixture(scope="module")
def azure(demo: Running) -> Iterator[openai.AzureOpenAI]:
    with azure_client(demo.proxy_url) as client:
        yield client


def test_azure_chat(demo: Running, azure: openai.AzureOpenAI) -> None:
    """Chat through `/openai/deployments/{deployment}/chat/completions?api-version=…`."""
    before = len(demo.emulator_state()["inference_requests"])
    answer = azure.chat.completions.create(model=CHAT, messages=MESSAGES)
    assert "Hello from AzureOpenAI" in (answer.choices[0].message.content or "")
    assert answer.usage and answer.usage.total_tokens > 0
    seen = demo.emulator_state()["inference_requests"][before:]
    assert [r["path"] for r in seen] == ["/openai/v1/chat/completions"], seen


def test_azure_chat_stream(azure: openai.AzureOpenAI) -> None:
    """A stream arrives in chunks that join to the whole answer."""
    stream = azure.chat.completions.create(model=CHAT, messages=MESSAGES, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert "Hello from AzureOpenAI" in text


def test_azure_embeddings(azure: openai.AzureOpenAI) -> None:
    result = azure.embeddings.create(model=DEMO["EMBEDDING_DEPLOYMENT"], input=["one", "two"])
    assert len(result.data) == 2 and len(result.data[0].embedding) > 0


def test_azure_responses(azure: openai.AzureOpenAI) -> None:
    """The Responses API through `/openai/responses?api-version=…` (no deployment in the path)."""
    response = azure.responses.create(model=CHAT, input="Say hi")
    assert response.output_text


def test_azure_async(demo: Running) -> None:
    """`AsyncAzureOpenAI`: two requests at once."""
    async def run() -> list[str]:
        client = openai.AsyncAzureOpenAI(
            azure_endpoint=demo.proxy_url, api_key="unused", api_version=API_VERSION, max_retries=0,
            timeout=HTTP_TIMEOUT, http_client=openai.DefaultAsyncHttpxClient(trust_env=False))
        async with client:
            answers = await asyncio.gather(*(
                client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": f"async {i}"}])
                for i in range(2)))
        return [a.choices[0].message.content or "" for a in answers]

    texts = asyncio.run(run())
    assert "async 0" in texts[0] and "async 1" in texts[1]


def test_azure_refusal_is_explained_in_the_message(no_role: Running) -> None:
    """An app without a role: the SDK's exception text (all the newest SDK prints) names the role,
    where to assign it, and the first step."""
    with azure_client(no_role.proxy_url) as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            client.chat.completions.create(model=CHAT, messages=MESSAGES)
    err = caught.value
    assert err.code == "missing_role_assignment"
    message = str(err)
    assert "Azure AI User" in message and "Access control (IAM)" in message, message
    assert "Fix: " in message, message


def test_openai_client_with_the_azure_v1_base_url(demo: Running) -> None:
    """`OpenAI(base_url="…/openai/v1/")`, as Microsoft's v1 samples configure the plain client."""
    with openai.OpenAI(base_url=f"{demo.proxy_url}/openai/v1/", api_key="unused", max_retries=0,
                       timeout=HTTP_TIMEOUT, http_client=openai.DefaultHttpxClient(trust_env=False)) as client:
        answer = client.chat.completions.create(model=CHAT, messages=MESSAGES)
        assert answer.choices[0].message.content
        assert client.responses.create(model=CHAT, input="v1 path").output_text


def test_project_endpoint_from_the_endpoint_alone(emulator: Emulator) -> None:
    """FOUNDRY_ENDPOINT=…/api/projects/NAME and nothing else: the proxy picks the project style and
    its https://ai.azure.com/.default scope by itself, and serves chat and responses."""
    project = DEMO.get("PROJECT", "demo-project")
    env = serve_env(emulator.url, DEMO["CLIENT_ID"], DEMO["CLIENT_SECRET"])
    env["FOUNDRY_ENDPOINT"] = f"{emulator.url}/api/projects/{project}"
    proxy, proxy_url = start_serve(env, "serve-project")
    try:
        readyz = proxy.wait_ready(proxy_url)
        assert readyz["api"] == "project", readyz
        assert readyz["identity"]["audience"].rstrip("/") == "https://ai.azure.com", readyz
        with openai.OpenAI(base_url=f"{proxy_url}/v1", api_key="unused", max_retries=0, timeout=HTTP_TIMEOUT,
                           http_client=openai.DefaultHttpxClient(trust_env=False)) as client:
            assert client.chat.completions.create(model=CHAT, messages=MESSAGES).choices[0].message.content
            assert client.responses.create(model=CHAT, input="project").output_text
        paths = [r["path"] for r in emulator.state()["inference_requests"]]
        assert f"/api/projects/{project}/openai/v1/responses" in paths, paths
    finally:
        proxy.stop()
