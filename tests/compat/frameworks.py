"""One adapter per framework: the same six things done the way that framework's users do them.

Each adapter is a class with the methods of `Framework`; a new client kind is a subclass (often of
an existing adapter, overriding one factory method, e.g. an `AzureOpenAI` client for `OpenAISdk`)
added to FRAMEWORKS. Frameworks are imported inside the methods, so one that fails to import
fails its own cells of the matrix, not the whole suite.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

from e2e_conftest import DEMO, HTTP_TIMEOUT, Running, make_client

CHAT = DEMO["CHAT_DEPLOYMENT"]
EMBEDDING = DEMO["EMBEDDING_DEPLOYMENT"]
CLAUDE = DEMO["CLAUDE_DEPLOYMENT"]
# Any key works: the proxy drops it and sends its own Entra token.
API_KEY = "sk-compat-this-key-must-never-reach-azure"

# The matrix's columns, in order.
CAPABILITIES = ("chat", "stream", "tools", "structured", "embeddings", "refusal")


class NotAvailable(Exception):
    """The framework has no such feature: the cell reads "n/a"."""


class Weather(BaseModel):
    """The structured output every framework asks for."""

    city: str
    temperature_c: float = Field(ge=-90, le=60)
    conditions: Literal["sunny", "cloudy", "rain"]
    observed_on: datetime.date


def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return f"sunny in {city}"


# The tool as Chat Completions takes it (for the clients that take raw tool definitions).
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"], "additionalProperties": False},
    },
}


@dataclass
class ToolTrip:
    """A tool-call round trip: the call the model made and the final answer after the result."""

    name: str
    arguments: dict[str, Any]
    final: str


class Framework:
    """What the matrix asks of each framework. `run` is a running proxy (tests/e2e/conftest.py)."""

    key = ""  # the pytest id
    name = ""  # the framework's part used, shown in the table next to the distribution
    dist = ""  # the PyPI distribution whose version the table shows
    route = "chat/completions"  # the /v1 route its chat goes to ("responses" for the Responses API)

    def chat(self, run: Running, prompt: str) -> str:
        raise NotImplementedError

    def stream(self, run: Running, prompt: str) -> list[str]:
        """The streamed text pieces, in order."""
        raise NotImplementedError

    def tool_round_trip(self, run: Running, prompt: str) -> ToolTrip:
        raise NotImplementedError

    def structured(self, run: Running, prompt: str) -> Weather:
        raise NotImplementedError

    def embed(self, run: Running, text: str) -> list[float]:
        raise NotAvailable

    def status_error(self) -> type[Exception]:
        """The exception the framework raises for an HTTP error answer."""
        import openai

        return openai.APIStatusError

    def refusal(self, run: Running, prompt: str) -> str:
        """What the user sees of a refused chat request (the exception's text)."""
        try:
            self.chat(run, prompt)
        except self.status_error() as e:
            return str(e)
        raise AssertionError("the request was not refused")


def _async_client(run: Running) -> Any:
    import openai

    return openai.AsyncOpenAI(base_url=run.base_url, api_key=API_KEY, max_retries=0, timeout=HTTP_TIMEOUT,
                              http_client=openai.DefaultAsyncHttpxClient(trust_env=False))


class OpenAISdk(Framework):
    key, name, dist = "openai", "OpenAI", "openai"

    def client(self, run: Running) -> Any:
        """The one factory a variant (e.g. AzureOpenAI) overrides."""
        return make_client(run.base_url)

    def chat(self, run: Running, prompt: str) -> str:
        with self.client(run) as c:
            return c.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": prompt}]) \
                .choices[0].message.content

    def stream(self, run: Running, prompt: str) -> list[str]:
        with self.client(run) as c, c.chat.completions.create(
                model=CHAT, messages=[{"role": "user", "content": prompt}], stream=True,
                stream_options={"include_usage": True}) as s:
            return [ch.choices[0].delta.content for ch in s if ch.choices and ch.choices[0].delta.content]

    def tool_round_trip(self, run: Running, prompt: str) -> ToolTrip:
        with self.client(run) as c:
            messages: list[Any] = [{"role": "user", "content": prompt}]
            first = c.chat.completions.create(model=CHAT, messages=messages, tools=[WEATHER_TOOL])
            assert first.choices[0].finish_reason == "tool_calls", first
            call = first.choices[0].message.tool_calls[0]
            arguments = json.loads(call.function.arguments)
            messages += [first.choices[0].message.model_dump(exclude_none=True),
                         {"role": "tool", "tool_call_id": call.id, "content": get_weather(**arguments)}]
            final = c.chat.completions.create(model=CHAT, messages=messages, tools=[WEATHER_TOOL])
            return ToolTrip(call.function.name, arguments, final.choices[0].message.content)

    def structured(self, run: Running, prompt: str) -> Weather:
        with self.client(run) as c:
            return c.chat.completions.parse(model=CHAT, messages=[{"role": "user", "content": prompt}],
                                            response_format=Weather).choices[0].message.parsed

    def embed(self, run: Running, text: str) -> list[float]:
        with self.client(run) as c:
            return c.embeddings.create(model=EMBEDDING, input=text).data[0].embedding


# The api-version Azure OpenAI clients are configured with; the proxy keeps or drops it by style.
AZURE_API_VERSION = "2024-10-21"


class AzureOpenAISdk(OpenAISdk):
    """`AzureOpenAI(azure_endpoint=…)`: the deployment in the path, the api-version in the query."""

    key, name, dist = "openai-azure", "AzureOpenAI", "openai"

    def client(self, run: Running) -> Any:
        import openai

        return openai.AzureOpenAI(azure_endpoint=run.proxy_url, api_key=API_KEY, api_version=AZURE_API_VERSION,
                                  max_retries=0, timeout=HTTP_TIMEOUT,
                                  http_client=openai.DefaultHttpxClient(trust_env=False))


class LangChain(Framework):
    key, name, dist = "langchain-openai", "ChatOpenAI, OpenAIEmbeddings", "langchain-openai"

    def llm(self, run: Running) -> Any:
        import httpx
        from langchain_openai import ChatOpenAI

        return ChatOpenAI(model=CHAT, base_url=run.base_url, api_key=API_KEY, max_retries=0, timeout=HTTP_TIMEOUT,
                          http_client=httpx.Client(trust_env=False))

    def chat(self, run: Running, prompt: str) -> str:
        return self.llm(run).invoke(prompt).content

    def stream(self, run: Running, prompt: str) -> list[str]:
        return [c.content for c in self.llm(run).stream(prompt) if c.content]

    def tool_round_trip(self, run: Running, prompt: str) -> ToolTrip:
        from langchain_core.messages import HumanMessage
        from langchain_core.tools import tool

        weather = tool(get_weather)
        bound = self.llm(run).bind_tools([weather])
        ai = bound.invoke([HumanMessage(prompt)])
        call = ai.tool_calls[0]
        result = weather.invoke(call)  # a ToolMessage answering the call
        final = bound.invoke([HumanMessage(prompt), ai, result])
        return ToolTrip(call["name"], call["args"], final.content)

    def structured(self, run: Running, prompt: str) -> Weather:
        return self.llm(run).with_structured_output(Weather).invoke(prompt)

    def embed(self, run: Running, text: str) -> list[float]:
        import httpx
        from langchain_openai import OpenAIEmbeddings

        # check_embedding_ctx_length=False: otherwise tiktoken downloads its tables.
        return OpenAIEmbeddings(model=EMBEDDING, base_url=run.base_url, api_key=API_KEY, max_retries=0,
                                check_embedding_ctx_length=False, timeout=HTTP_TIMEOUT,
                                http_client=httpx.Client(trust_env=False)).embed_query(text)


class LangChainAzure(LangChain):
    """`AzureChatOpenAI` and `AzureOpenAIEmbeddings`, configured with an Azure endpoint."""

    key, name, dist = "langchain-azure", "AzureChatOpenAI, AzureOpenAIEmbeddings", "langchain-openai"

    def llm(self, run: Running) -> Any:
        import httpx
        from langchain_openai import AzureChatOpenAI

        return AzureChatOpenAI(azure_endpoint=run.proxy_url, azure_deployment=CHAT, api_version=AZURE_API_VERSION,
                               api_key=API_KEY, max_retries=0, timeout=HTTP_TIMEOUT,
                               http_client=httpx.Client(trust_env=False))

    def embed(self, run: Running, text: str) -> list[float]:
        import httpx
        from langchain_openai import AzureOpenAIEmbeddings

        return AzureOpenAIEmbeddings(azure_endpoint=run.proxy_url, azure_deployment=EMBEDDING,
                                     api_version=AZURE_API_VERSION, api_key=API_KEY, max_retries=0,
                                     check_embedding_ctx_length=False, timeout=HTTP_TIMEOUT,
                                     http_client=httpx.Client(trust_env=False)).embed_query(text)


class PydanticAI(Framework):
    key, name, dist = "pydantic-ai", "Agent with OpenAIChatModel, Embedder", "pydantic-ai-slim"

    def model(self, run: Running) -> Any:
        from pydantic_ai.models.openai import OpenAIChatModel
        from pydantic_ai.providers.openai import OpenAIProvider

        return OpenAIChatModel(CHAT, provider=OpenAIProvider(openai_client=_async_client(run)))

    def chat(self, run: Running, prompt: str) -> str:
        from pydantic_ai import Agent

        return Agent(self.model(run)).run_sync(prompt).output

    def stream(self, run: Running, prompt: str) -> list[str]:
        from pydantic_ai import Agent

        async def go() -> list[str]:
            async with Agent(self.model(run)).run_stream(prompt) as result:
                return [d async for d in result.stream_text(delta=True, debounce_by=None) if d]

        return asyncio.run(go())

    def tool_round_trip(self, run: Running, prompt: str) -> ToolTrip:
        from pydantic_ai import Agent

        agent = Agent(self.model(run), tools=[get_weather])
        result = agent.run_sync(prompt)
        calls = [p for m in result.all_messages() for p in m.parts if p.part_kind == "tool-call"]
        return ToolTrip(calls[0].tool_name, calls[0].args_as_dict(), result.output)

    def structured(self, run: Running, prompt: str) -> Weather:
        from pydantic_ai import Agent

        return Agent(self.model(run), output_type=Weather).run_sync(prompt).output

    def embed(self, run: Running, text: str) -> list[float]:
        from pydantic_ai.embeddings import Embedder
        from pydantic_ai.embeddings.openai import OpenAIEmbeddingModel
        from pydantic_ai.providers.openai import OpenAIProvider

        model = OpenAIEmbeddingModel(EMBEDDING, provider=OpenAIProvider(openai_client=_async_client(run)))
        return list(Embedder(model).embed_query_sync(text).embeddings[0])

    def refusal(self, run: Running, prompt: str) -> str:
        from pydantic_ai.exceptions import ModelHTTPError

        try:
            self.chat(run, prompt)
        except ModelHTTPError as e:
            return str(e)
        raise AssertionError("the request was not refused")


class OpenAIAgents(Framework):
    """The Agents SDK with its default model class, which speaks the Responses API."""

    key, name, dist = "openai-agents", "Agent with OpenAIResponsesModel", "openai-agents"
    route = "responses"

    def agent(self, run: Running, **kwargs: Any) -> Any:
        from agents import Agent, OpenAIResponsesModel, set_tracing_disabled

        set_tracing_disabled(True)
        model = OpenAIResponsesModel(model=CHAT, openai_client=_async_client(run))
        return Agent(name="compat", instructions="Answer the user.", model=model, **kwargs)

    def chat(self, run: Running, prompt: str) -> str:
        from agents import Runner

        return Runner.run_sync(self.agent(run), prompt).final_output

    def stream(self, run: Running, prompt: str) -> list[str]:
        from agents import Runner

        async def go() -> list[str]:
            result = Runner.run_streamed(self.agent(run), prompt)
            return [e.data.delta async for e in result.stream_events()
                    if e.type == "raw_response_event" and e.data.type == "response.output_text.delta"]

        return asyncio.run(go())

    def tool_round_trip(self, run: Running, prompt: str) -> ToolTrip:
        from agents import Runner, function_tool

        result = Runner.run_sync(self.agent(run, tools=[function_tool(get_weather)]), prompt)
        calls = [i.raw_item for i in result.new_items if i.type == "tool_call_item"]
        return ToolTrip(calls[0].name, json.loads(calls[0].arguments), result.final_output)

    def structured(self, run: Running, prompt: str) -> Weather:
        from agents import Runner

        return Runner.run_sync(self.agent(run, output_type=Weather), prompt).final_output


class AnthropicSdk(Framework):
    """The `anthropic` SDK (`ANTHROPIC_BASE_URL`-style) against a Claude deployment: the Messages API.
    Structured output is the SDK's usual pattern, a forced tool whose input is the object."""

    key, name, dist = "anthropic", "Anthropic (Messages API)", "anthropic"
    route = "messages"

    def client(self, run: Running) -> Any:
        import anthropic

        return anthropic.Anthropic(base_url=run.proxy_url, api_key=API_KEY, max_retries=0, timeout=HTTP_TIMEOUT,
                                   http_client=anthropic.DefaultHttpxClient(trust_env=False))

    def chat(self, run: Running, prompt: str) -> str:
        with self.client(run) as c:
            message = c.messages.create(model=CLAUDE, max_tokens=512,
                                        messages=[{"role": "user", "content": prompt}])
            return "".join(block.text for block in message.content if block.type == "text")

    def stream(self, run: Running, prompt: str) -> list[str]:
        with self.client(run) as c, c.messages.stream(model=CLAUDE, max_tokens=512,
                                                      messages=[{"role": "user", "content": prompt}]) as s:
            return [piece for piece in s.text_stream if piece]

    def tool_round_trip(self, run: Running, prompt: str) -> ToolTrip:
        tool = {"name": WEATHER_TOOL["function"]["name"], "description": WEATHER_TOOL["function"]["description"],
                "input_schema": WEATHER_TOOL["function"]["parameters"]}
        with self.client(run) as c:
            messages: list[Any] = [{"role": "user", "content": prompt}]
            first = c.messages.create(model=CLAUDE, max_tokens=512, messages=messages, tools=[tool])
            assert first.stop_reason == "tool_use", first
            call = next(block for block in first.content if block.type == "tool_use")
            messages += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                                       "content": get_weather(**call.input)}]}]
            final = c.messages.create(model=CLAUDE, max_tokens=512, messages=messages, tools=[tool])
            text = "".join(block.text for block in final.content if block.type == "text")
            return ToolTrip(call.name, dict(call.input), text)

    def structured(self, run: Running, prompt: str) -> Weather:
        tool = {"name": "Weather", "description": "Report the weather.", "input_schema": Weather.model_json_schema()}
        with self.client(run) as c:
            message = c.messages.create(model=CLAUDE, max_tokens=512, messages=[{"role": "user", "content": prompt}],
                                        tools=[tool], tool_choice={"type": "tool", "name": "Weather"})
            call = next(block for block in message.content if block.type == "tool_use")
            return Weather.model_validate(call.input)

    def status_error(self) -> type[Exception]:
        import anthropic

        return anthropic.APIStatusError


class LiteLLM(Framework):
    """litellm as a client library, with the `openai/` provider and the proxy as `api_base`."""

    key, name, dist = "litellm", "completion, embedding", "litellm"

    def call(self, run: Running, **kwargs: Any) -> Any:
        import litellm

        return litellm.completion(model=f"openai/{CHAT}", api_base=run.base_url, api_key=API_KEY,
                                  timeout=HTTP_TIMEOUT, max_retries=0, **kwargs)

    def chat(self, run: Running, prompt: str) -> str:
        return self.call(run, messages=[{"role": "user", "content": prompt}]).choices[0].message.content

    def stream(self, run: Running, prompt: str) -> list[str]:
        chunks = self.call(run, messages=[{"role": "user", "content": prompt}], stream=True)
        return [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]

    def tool_round_trip(self, run: Running, prompt: str) -> ToolTrip:
        messages: list[Any] = [{"role": "user", "content": prompt}]
        first = self.call(run, messages=messages, tools=[WEATHER_TOOL])
        call = first.choices[0].message.tool_calls[0]
        arguments = json.loads(call.function.arguments)
        messages += [{"role": "assistant", "content": None, "tool_calls": [
                         {"id": call.id, "type": "function",
                          "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
                     {"role": "tool", "tool_call_id": call.id, "content": get_weather(**arguments)}]
        final = self.call(run, messages=messages, tools=[WEATHER_TOOL])
        return ToolTrip(call.function.name, arguments, final.choices[0].message.content)

    def structured(self, run: Running, prompt: str) -> Weather:
        answer = self.call(run, messages=[{"role": "user", "content": prompt}], response_format=Weather)
        return Weather.model_validate_json(answer.choices[0].message.content)

    def embed(self, run: Running, text: str) -> list[float]:
        import litellm

        answer = litellm.embedding(model=f"openai/{EMBEDDING}", input=[text], api_base=run.base_url,
                                   api_key=API_KEY, timeout=HTTP_TIMEOUT, max_retries=0)
        return answer.data[0]["embedding"]

    def refusal(self, run: Running, prompt: str) -> str:
        import litellm

        try:
            self.chat(run, prompt)
        except litellm.exceptions.AuthenticationError as e:
            return str(e)
        raise AssertionError("the request was not refused")


FRAMEWORKS: list[Framework] = [OpenAISdk(), AzureOpenAISdk(), LangChain(), LangChainAzure(), PydanticAI(),
                               OpenAIAgents(), LiteLLM(), AnthropicSdk()]
