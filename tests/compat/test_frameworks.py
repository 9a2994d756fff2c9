"""The compatibility matrix: every framework in frameworks.py against `foundry-proxy demo`, one test per
capability. The expected answers follow the emulator's answer rules (docs/emulator.md), so each test
checks that the framework got the model's answer through whole, not merely that no error was raised."""

from __future__ import annotations

import datetime
import math

import pytest

from e2e_conftest import DEMO, Running, http
from frameworks import FRAMEWORKS, Framework, NotAvailable, Weather

GREETING = "Hello from the foundry-proxy emulator."


@pytest.fixture(params=FRAMEWORKS, ids=lambda f: f.key)
def framework(request: pytest.FixtureRequest) -> Framework:
    return request.param


@pytest.mark.capability("chat")
def test_chat(framework: Framework, demo: Running) -> None:
    assert framework.chat(demo, "Say hello") == f"{GREETING} You said: Say hello"


@pytest.mark.capability("stream")
def test_stream(framework: Framework, demo: Running) -> None:
    pieces = framework.stream(demo, "stream these words please")
    assert "".join(pieces) == f"{GREETING} You said: stream these words please"
    assert len(pieces) > 1, f"the answer came in one piece, not streamed: {pieces}"


@pytest.mark.capability("tools")
def test_tool_round_trip(framework: Framework, demo: Running) -> None:
    trip = framework.tool_round_trip(demo, "What is the weather in Paris?")
    assert trip.name == "get_weather"
    # Strings are named after their property (docs/emulator.md).
    assert trip.arguments == {"city": "city"}
    assert trip.final == f"{GREETING} Tool results: get_weather returned sunny in city"


@pytest.mark.capability("structured")
def test_structured_output(framework: Framework, demo: Running) -> None:
    weather = framework.structured(demo, "What is the weather in Paris?")
    assert weather == Weather(city="city", temperature_c=1.5, conditions="sunny",
                              observed_on=datetime.date(2024, 1, 1))


@pytest.mark.capability("embeddings")
def test_embeddings(framework: Framework, demo: Running) -> None:
    try:
        vector = framework.embed(demo, "hello")
    except NotAvailable:
        pytest.skip(f"{framework.dist} ({framework.name}) has no embeddings API")
    assert len(vector) > 1 and all(isinstance(x, float) for x in vector)
    assert math.isclose(math.fsum(x * x for x in vector), 1.0, rel_tol=1e-3), "not a unit vector"


@pytest.mark.capability("refusal")
def test_refusal_explanation_reaches_the_user(framework: Framework, no_role: Running) -> None:
    """The NO_ROLE app's request is refused with a 401 the proxy explains (which roles to assign, and to
    whom); that explanation, word for word, must be in what the framework shows the user."""
    shown = framework.refusal(no_role, "hi")
    # The proxy's own explanation for the route this framework uses, asked for without any framework.
    body = {"model": DEMO["CHAT_DEPLOYMENT"]}
    body.update({"input": "hi"} if framework.route == "responses"
                else {"messages": [{"role": "user", "content": "hi"}]})
    answer = http("POST", f"{no_role.base_url}/{framework.route}", body=body)
    assert answer.status == 401, answer
    error = answer.json()["error"]
    # The Responses API needs a data action of its own, which the proxy explains under its own code.
    assert error["code"] in ("missing_role_assignment", "missing_responses_permission"), error
    assert DEMO["NO_ROLE_OBJECT_ID"] in error["message"] and "Azure AI User" in error["message"], error
    assert error["message"] in shown, f"the explanation did not reach the user; they saw: {shown}"
