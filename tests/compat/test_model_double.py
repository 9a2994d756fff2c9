"""The emulator as a model double (docs/emulator.md), through the proxy: structured outputs valid
against their schemas (checked by the `jsonschema` package, an independent validator), tool calls
by the documented rules, streams shaped like the real service's, the request's settings reflected
in Responses objects, the same answer for the same request, and agent loops that end."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from e2e_conftest import DEMO, Running, http, make_client
from frameworks import WEATHER_TOOL, Weather

CHAT = DEMO["CHAT_DEPLOYMENT"]

# A schema with every construct the generator supports.
RICH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "$defs": {
        "Item": {"type": "object", "properties": {
            "sku": {"type": "string", "minLength": 6, "maxLength": 8},
            "qty": {"type": "integer", "exclusiveMinimum": 0, "maximum": 10},
            "price": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        }, "required": ["sku", "qty", "price"], "additionalProperties": False},
    },
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "email": {"type": "string", "format": "email"},
        "site": {"type": "string", "format": "uri"},
        "at": {"type": "string", "format": "date-time"},
        "day": {"type": "string", "format": "date"},
        "time": {"type": "string", "format": "time"},
        "status": {"enum": ["open", "closed"]},
        "kind": {"const": "order"},
        "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}, "minItems": 2, "maxItems": 3},
        "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True, "minItems": 3},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "channel": {"oneOf": [{"type": "integer", "minimum": 100}, {"type": "boolean"}]},
        "score": {"type": "integer", "minimum": -5, "maximum": 5, "multipleOf": 3},
    },
    "required": ["id", "email", "site", "at", "day", "time", "status", "kind", "items", "tags", "note",
                 "channel", "score"],
    "additionalProperties": False,
}


def validate(value: Any, schema: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER) \
        .validate(value)


def sse_data(body: bytes) -> list[Any]:
    """The JSON of every `data:` line of an SSE body (without `[DONE]`)."""
    return [json.loads(line[6:]) for line in body.decode().splitlines()
            if line.startswith("data: ") and line != "data: [DONE]"]


def post(run: Running, route: str, body: dict[str, Any]) -> Any:
    answer = http("POST", f"{run.base_url}/{route}", body={"model": CHAT, **body})
    assert answer.status == 200, answer
    return answer


TOOLS = [WEATHER_TOOL, {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}}}}]


# ---------------------------------------------------------------------------------------------
# Chat Completions
# ---------------------------------------------------------------------------------------------

def test_json_schema_content_validates(demo: Running) -> None:
    for strict in (True, False):
        body = post(demo, "chat/completions", {
            "messages": [{"role": "user", "content": "an order please"}],
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "order", "schema": RICH_SCHEMA, "strict": strict}},
        }).json()
        validate(json.loads(body["choices"][0]["message"]["content"]), RICH_SCHEMA)
        assert body["choices"][0]["finish_reason"] == "stop"


def test_json_object_content_is_an_object(demo: Running) -> None:
    body = post(demo, "chat/completions", {"messages": [{"role": "user", "content": "json please"}],
                                           "response_format": {"type": "json_object"}}).json()
    assert json.loads(body["choices"][0]["message"]["content"]) == {
        "answer": "Hello from the foundry-proxy emulator. You said: json please"}


def test_the_same_request_gets_the_same_answer(demo: Running) -> None:
    request = {"messages": [{"role": "user", "content": "use get_time and get_weather"}], "tools": TOOLS}
    first, second = (post(demo, "chat/completions", request).json() for _ in range(2))
    calls = [[(c["function"]["name"], c["function"]["arguments"]) for c in b["choices"][0]["message"]["tool_calls"]]
             for b in (first, second)]
    assert calls[0] == calls[1] == [("get_weather", '{"city":"city"}'), ("get_time", '{"zone":"zone"}')]


@pytest.mark.parametrize(("extra", "prompt", "expected"), [
    ({}, "hello", ["get_weather"]),  # no tool named: the first
    ({}, "what does get_time say", ["get_time"]),  # the named one
    ({"parallel_tool_calls": False}, "get_time then get_weather", ["get_weather"]),  # first named, in offered order
    ({"tool_choice": "required"}, "hello", ["get_weather"]),
    ({"tool_choice": {"type": "function", "function": {"name": "get_time"}}}, "get_weather!", ["get_time"]),
    ({"tool_choice": "none"}, "get_weather!", []),
])
def test_tool_choice_rules(demo: Running, extra: dict[str, Any], prompt: str, expected: list[str]) -> None:
    body = post(demo, "chat/completions", {"messages": [{"role": "user", "content": prompt}],
                                           "tools": TOOLS, **extra}).json()
    choice = body["choices"][0]
    names = [c["function"]["name"] for c in choice["message"].get("tool_calls") or []]
    assert names == expected
    assert choice["finish_reason"] == ("tool_calls" if expected else "stop")
    if not expected:
        assert choice["message"]["content"].startswith("Hello from the foundry-proxy emulator.")


def test_streamed_tool_calls_are_shaped_like_openais(demo: Running) -> None:
    request = {"messages": [{"role": "user", "content": "get_weather and get_time"}], "tools": TOOLS}
    whole = post(demo, "chat/completions", request).json()["choices"][0]["message"]["tool_calls"]
    frames = sse_data(post(demo, "chat/completions", {**request, "stream": True,
                                                      "stream_options": {"include_usage": True}}).body)
    deltas = [f["choices"][0]["delta"] for f in frames if f["choices"]]
    # Each call opens with its id, type, name and empty arguments; then argument fragments.
    opening = [d["tool_calls"][0] for d in deltas if d.get("tool_calls") and "id" in d["tool_calls"][0]]
    assert [(o["index"], o["type"], o["function"]["name"], o["function"]["arguments"]) for o in opening] == [
        (0, "function", "get_weather", ""), (1, "function", "get_time", "")]
    assert deltas[0]["role"] == "assistant"
    for index, call in enumerate(whole):
        fragments = [d["tool_calls"][0]["function"]["arguments"] for d in deltas
                     if d.get("tool_calls") and d["tool_calls"][0]["index"] == index]
        assert len(fragments) > 2
        assert "".join(fragments) == call["function"]["arguments"]
    assert [f["choices"][0]["finish_reason"] for f in frames if f["choices"]][-1] == "tool_calls"
    assert frames[-1]["choices"] == [] and frames[-1]["usage"]["completion_tokens"] > 0


def test_streamed_json_content_rejoins_to_valid_json(demo: Running) -> None:
    frames = sse_data(post(demo, "chat/completions", {
        "messages": [{"role": "user", "content": "an order"}], "stream": True,
        "response_format": {"type": "json_schema", "json_schema": {"name": "order", "schema": RICH_SCHEMA}},
    }).body)
    pieces = [f["choices"][0]["delta"].get("content") for f in frames if f["choices"]]
    pieces = [p for p in pieces if p]
    assert len(pieces) > 10
    validate(json.loads("".join(pieces)), RICH_SCHEMA)


def test_sdk_stream_helper_accumulates_tool_calls(demo: Running) -> None:
    """openai's `chat.completions.stream` helper rebuilds the call from the deltas, strict tool parsed."""
    import openai

    with make_client(demo.base_url) as client, client.chat.completions.stream(
            model=CHAT, messages=[{"role": "user", "content": "weather?"}],
            tools=[openai.pydantic_function_tool(Weather, name="report")]) as stream:
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert call.function.name == "report"
    assert call.function.parsed_arguments == Weather.model_validate_json(call.function.arguments)


# ---------------------------------------------------------------------------------------------
# Responses API
# ---------------------------------------------------------------------------------------------

RESPONSES_TOOL = {"type": "function", "name": "get_weather", "description": "Weather in a city.",
                  "parameters": WEATHER_TOOL["function"]["parameters"], "strict": True}


def test_responses_function_call_round_trip(demo: Running) -> None:
    with make_client(demo.base_url) as client:
        first = client.responses.create(model=CHAT, input="weather in Paris?", tools=[RESPONSES_TOOL],
                                        tool_choice="auto", temperature=0.2, parallel_tool_calls=False)
        call = first.output[0]
        assert (call.type, call.name, call.arguments, call.status) == (
            "function_call", "get_weather", '{"city":"city"}', "completed")
        assert call.call_id.startswith("call_")
        # The request's own settings are reflected.
        assert [t.name for t in first.tools] == ["get_weather"]
        assert (first.tool_choice, first.temperature, first.parallel_tool_calls) == ("auto", 0.2, False)
        assert first.text.format.type == "text"
        final = client.responses.create(model=CHAT, tools=[RESPONSES_TOOL], input=[
            {"role": "user", "content": "weather in Paris?"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ])
    assert final.output_text == "Hello from the foundry-proxy emulator. Tool results: get_weather returned sunny"


def test_responses_text_format_json_schema(demo: Running) -> None:
    text = {"format": {"type": "json_schema", "name": "order", "schema": RICH_SCHEMA, "strict": True}}
    with make_client(demo.base_url) as client:
        answer = client.responses.create(model=CHAT, input="an order", text=text)
        parsed = client.responses.parse(model=CHAT, input="weather", text_format=Weather).output_parsed
    validate(json.loads(answer.output_text), RICH_SCHEMA)
    assert answer.text.format.type == "json_schema" and answer.text.format.name == "order"
    assert isinstance(parsed, Weather)


def test_responses_stream_events_for_a_function_call(demo: Running) -> None:
    body = post(demo, "responses", {"input": "get_weather", "tools": [RESPONSES_TOOL], "stream": True}).body
    events = sse_data(body)
    kinds = [e["type"] for e in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[-3:] == ["response.function_call_arguments.done", "response.output_item.done",
                          "response.completed"]
    added = events[2]["item"]
    assert (added["type"], added["status"], added["arguments"], added["name"]) == (
        "function_call", "in_progress", "", "get_weather")
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta")
    assert deltas == events[-3]["arguments"] == '{"city":"city"}'
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[-1]["response"]["output"][0]["call_id"] == added["call_id"]


# ---------------------------------------------------------------------------------------------
# Agent loops end
# ---------------------------------------------------------------------------------------------

def test_pydantic_ai_agent_with_tools_and_an_output_type_ends(demo: Running) -> None:
    """tool_choice "required" (no text output allowed): the function tool first, then `final_result`,
    the first tool not called yet."""
    from pydantic_ai import Agent

    from frameworks import PydanticAI, get_weather

    agent = Agent(PydanticAI().model(demo), tools=[get_weather], output_type=Weather)
    result = agent.run_sync("weather in Paris?")
    assert isinstance(result.output, Weather)
    calls = [p.tool_name for m in result.all_messages() for p in m.parts if p.part_kind == "tool-call"]
    assert calls == ["get_weather", "final_result"]


def test_agents_sdk_agent_with_tools_and_an_output_type_ends(demo: Running) -> None:
    from agents import Runner, function_tool

    from frameworks import OpenAIAgents, get_weather

    agent = OpenAIAgents().agent(demo, tools=[function_tool(get_weather)], output_type=Weather)
    result = Runner.run_sync(agent, "weather in Paris?")
    assert isinstance(result.final_output, Weather)
    assert [i.raw_item.name for i in result.new_items if i.type == "tool_call_item"] == ["get_weather"]
