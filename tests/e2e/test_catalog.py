"""Every Azure and Entra ID refusal the emulator can play, seen through the official OpenAI Python SDK.

For each refusal the proxy must answer with the diagnosis catalog's entry (src/diagnose/catalog.rs):
the SDK raises the exception class of the status the catalog promises, `e.body` (the SDK puts the
`error` object there) carries the catalog `code`, a `message` that is the catalog's cause with the
run-time values filled in, non-empty `fix` steps, and for Azure refusals Azure's own status under
`upstream`. The expected causes are read from catalog.rs itself, so these tests check that the
catalog is what users get, not a copy of its wording.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterator

import openai
import pytest

from conftest import DEMO, REPO, Emulator, Process, Running, make_client, serve_env, start_serve

CHAT = DEMO["CHAT_DEPLOYMENT"]
CATALOG_RS = REPO / "src" / "diagnose" / "catalog.rs"
CODE_RS = REPO / "src" / "diagnose" / "code.rs"


# --------------------------------------------------------------------------------------------------
# The catalog, as the tests read it
# --------------------------------------------------------------------------------------------------

def _catalog_causes() -> dict[str, str]:
    """`code` → cause template of every catalog entry, read from catalog.rs (entries name a
    `RefusalCode` variant; code.rs maps each variant to its wire string)."""
    text = CATALOG_RS.read_text(encoding="utf-8")
    wire = dict(re.findall(r'Self::(\w+) => "(\w+)"', CODE_RS.read_text(encoding="utf-8")))
    entries = re.findall(r'code: RefusalCode::(\w+),.*?cause:\s*"((?:[^"\\]|\\.)*)"', text, re.S)
    causes = {wire[variant]: re.sub(r"\\(.)", r"\1", cause) for variant, cause in entries if variant in wire}
    if len(causes) < 20:
        pytest.exit(f"could not read the catalog's causes from {CATALOG_RS}", returncode=2)
    return causes


CAUSES = _catalog_causes()
PLACEHOLDER = re.compile(r"\{[a-z_]+\}")


def key_phrase(code: str) -> str:
    """The longest fixed text of the cause of `code` (what every answer with that code must say)."""
    return max(PLACEHOLDER.split(CAUSES[code]), key=len).strip()


def cause_pattern(code: str) -> re.Pattern[str]:
    """The whole cause template of `code` as a regex: fixed text literally, placeholders as any text."""
    parts = PLACEHOLDER.split(CAUSES[code])
    return re.compile(".*?".join(re.escape(part) for part in parts), re.S)


def assert_catalog_answer(err: openai.APIStatusError, exception: type[openai.APIStatusError],
                          status: int, code: str) -> dict[str, Any]:
    """The SDK exception is the catalog entry `code`: class, status, code, cause and fix steps."""
    assert type(err) is exception, f"expected {exception.__name__}, got {type(err).__name__}: {err}"
    assert err.status_code == status, err
    body = err.body
    assert isinstance(body, dict), f"the SDK found no error object: {err.response.text}"
    assert body["code"] == code, f"expected code {code}, got {body['code']}: {body['message']}"
    assert err.code == code
    phrase = key_phrase(code)
    assert phrase in str(err), f"the message lacks the catalog's cause {phrase!r}: {err}"
    # SDKs print only `message`: it is the cause, then "Fix: " and the first fix step.
    fix_suffix = " Fix: " + body["fix"][0] if body.get("fix") else ""
    assert body["message"].endswith(fix_suffix), f"the message lacks the first fix step: {body}"
    cause = body["message"][: len(body["message"]) - len(fix_suffix)]
    assert cause_pattern(code).fullmatch(cause), (
        f"the message is not the catalog's cause for {code}:\n  got:      {cause}\n"
        f"  template: {CAUSES[code]}")
    assert "<" not in cause, f"unfilled placeholder: {body['message']}"
    assert isinstance(body["fix"], list) and body["fix"] and all(isinstance(s, str) and s for s in body["fix"]), body
    return body


# --------------------------------------------------------------------------------------------------
# Azure refusals: `x-emulator-fault` on a request through the demo proxy
# --------------------------------------------------------------------------------------------------

# fault, SDK exception, status (Azure's, kept by the proxy), catalog code
AZURE_FAULTS = [
    ("permission-denied", openai.AuthenticationError, 401, "missing_role_assignment"),
    ("permission-denied-legacy", openai.AuthenticationError, 401, "missing_role_assignment"),
    ("permission-denied-foundry", openai.AuthenticationError, 401, "missing_role_assignment"),
    ("key-auth-disabled", openai.PermissionDeniedError, 403, "key_auth_disabled"),
    ("bad-key", openai.AuthenticationError, 401, "api_key_expected"),
    ("unauthorized", openai.AuthenticationError, 401, "token_rejected"),
    ("regional-endpoint", openai.BadRequestError, 400, "custom_subdomain_required"),
    ("network-rules", openai.PermissionDeniedError, 403, "network_rules"),
    ("vnet-endpoint", openai.PermissionDeniedError, 403, "private_endpoint_required"),
    ("private-endpoint", openai.PermissionDeniedError, 403, "private_endpoint_required"),
    ("deployment-not-found", openai.NotFoundError, 404, "deployment_not_found"),
    ("unknown-model", openai.NotFoundError, 404, "unknown_model"),
    ("resource-not-found", openai.NotFoundError, 404, "resource_not_found"),
    ("api-version-too-old", openai.BadRequestError, 400, "api_version_too_old"),
    ("api-version-unsupported", openai.BadRequestError, 400, "api_version_not_supported"),
    ("parameter-not-supported", openai.UnprocessableEntityError, 422, "parameter_not_supported"),
]


@pytest.mark.parametrize(("fault", "exception", "status", "code"), AZURE_FAULTS,
                         ids=[fault for fault, *_ in AZURE_FAULTS])
def test_azure_refusal_is_explained(demo: Running, client: openai.OpenAI, fault: str,
                                    exception: type[openai.APIStatusError], status: int, code: str) -> None:
    """Azure's refusal `fault` reaches the SDK as the catalog entry `code`: Azure's status and exception
    class, the catalog's cause and fix steps, and Azure's own answer (same status) under `upstream`."""
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "hi"}],
                                       extra_headers={"x-emulator-fault": fault})
    body = assert_catalog_answer(caught.value, exception, status, code)
    assert body["upstream"]["status"] == status, body["upstream"]
    assert isinstance(body["upstream"]["body"], dict) and body["upstream"]["body"], body["upstream"]


def test_unknown_deployment_name_is_explained(client: openai.OpenAI) -> None:
    """A `model` that names no deployment (Azure: 404 DeploymentNotFound) is explained as
    deployment_not_found, still 404, and the message names the deployment that was asked for."""
    name = "no-such-deployment-e2e"
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}])
    body = assert_catalog_answer(caught.value, openai.NotFoundError, 404, "deployment_not_found")
    assert f"'{name}'" in body["message"], body["message"]
    assert body["upstream"]["status"] == 404
    assert body["upstream"]["body"]["error"]["code"] == "DeploymentNotFound"


def test_responses_without_a_role_is_explained(no_role: Running) -> None:
    """/v1/responses for an app without a data-plane role: Azure's PermissionDenied names the
    responses/write data action, so the answer is missing_responses_permission (401), which names
    the roles that include it."""
    with no_role.client() as client:
        with pytest.raises(openai.APIStatusError) as caught:
            client.responses.create(model=CHAT, input="hi")
    body = assert_catalog_answer(caught.value, openai.AuthenticationError, 401, "missing_responses_permission")
    assert DEMO["NO_ROLE_OBJECT_ID"] in body["message"]
    assert body["upstream"]["status"] == 401
    assert body["upstream"]["body"]["error"]["code"] == "PermissionDenied"


# --------------------------------------------------------------------------------------------------
# Entra ID refusals: an AADSTS fault in place before a fresh `serve` asks for its first token
# --------------------------------------------------------------------------------------------------

# AADSTS code → catalog code (the mapping of entra_code() in src/diagnose/mod.rs)
ENTRA_REFUSALS = [
    (7000215, "invalid_client_secret"),
    (7000222, "client_secret_expired"),
    (700016, "unknown_client_id"),
    (90002, "unknown_tenant"),
    (70011, "invalid_scope"),
    (500011, "unknown_resource"),
    (700022, "scope_multiple_resources"),
    (7000218, "missing_client_credential"),
    (700027, "certificate_not_registered"),
    (700024, "assertion_time_invalid"),
    (70021, "federated_credential_mismatch"),
    (900144, "missing_parameter"),
    (9001023, "tenant_specific_endpoint_required"),
]


@pytest.fixture
def serve_with_entra_fault(emulator: Emulator) -> Iterator[Callable[[str], openai.OpenAI]]:
    """Starts a fresh `serve` (the demo app) after setting the emulator's `entra_fault`, so its very
    first token request meets the fault, and returns an SDK client for it; stops it and clears the
    fault afterwards."""
    processes: list[Process] = []
    clients: list[openai.OpenAI] = []

    def start(fault: str) -> openai.OpenAI:
        emulator.config({"entra_fault": fault})
        process, proxy_url = start_serve(serve_env(emulator.url, DEMO["CLIENT_ID"], DEMO["CLIENT_SECRET"]),
                                         f"serve-{fault.replace(':', '-')}")
        processes.append(process)
        clients.append(make_client(f"{proxy_url}/v1"))
        return clients[-1]

    try:
        yield start
    finally:
        for client in clients:
            client.close()
        for process in processes:
            process.stop()
        emulator.config({"entra_fault": None})


def _first_request(client: openai.OpenAI) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "hi"}])
    return caught.value


@pytest.mark.parametrize(("aadsts", "code"), ENTRA_REFUSALS, ids=[f"AADSTS{n}" for n, _ in ENTRA_REFUSALS])
def test_entra_refusal_is_explained(serve_with_entra_fault: Callable[[str], openai.OpenAI], aadsts: int, code: str) -> None:
    """Entra refusing the proxy's credential with AADSTS`aadsts` reaches the SDK as AuthenticationError
    (401) with the catalog entry `code`, whose message names the AADSTS code, and Entra's own answer
    under `upstream`."""
    err = _first_request(serve_with_entra_fault(f"aadsts:{aadsts}"))
    body = assert_catalog_answer(err, openai.AuthenticationError, 401, code)
    assert f"AADSTS{aadsts}" in body["message"], body["message"]
    assert aadsts in body["upstream"]["body"]["error_codes"], body["upstream"]


def test_entra_transient_error_is_a_503(serve_with_entra_fault: Callable[[str], openai.OpenAI]) -> None:
    """Entra's transient AADSTS90033 (temporarily unavailable) with no token held yet is not the
    credential's fault: the SDK gets a 503 (InternalServerError) with code entra_unavailable and a
    retry-after, and Entra's answer under `upstream`."""
    err = _first_request(serve_with_entra_fault("aadsts:90033"))
    body = assert_catalog_answer(err, openai.InternalServerError, 503, "entra_unavailable")
    assert "AADSTS90033" in body["message"], body["message"]
    assert err.response.headers.get("retry-after"), dict(err.response.headers)
    assert 90033 in body["upstream"]["body"]["error_codes"], body["upstream"]
