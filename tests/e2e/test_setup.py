"""`foundry-proxy setup` against the emulator, then `serve` with the env file it wrote, then the
official OpenAI SDK through that proxy. The operator signs in with a pipeline's credential
(FOUNDRY_CREDENTIAL=client-secret, the demo app), so no Azure CLI is needed."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

from conftest import DEMO, clean_env, make_client, proxy_binary, start_emulator, start_serve

RESOURCE = "emulator-foundry"


def run_setup(emulator_url: str, env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = clean_env(
        FOUNDRY_CREDENTIAL="client-secret",
        AZURE_TENANT_ID=DEMO["TENANT_ID"],
        AZURE_CLIENT_ID=DEMO["CLIENT_ID"],
        AZURE_CLIENT_SECRET=DEMO["CLIENT_SECRET"],
        AZURE_AUTHORITY_HOST=emulator_url,
        FOUNDRY_PROXY_ARM_ENDPOINT=emulator_url,
        FOUNDRY_PROXY_GRAPH_ENDPOINT=emulator_url,
    )
    return subprocess.run(
        [str(proxy_binary()), "setup", "--resource", RESOURCE, "--env-file", str(env_file), "--json", *args],
        env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=50,
    )


def read_env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))
    return {key: value for key, value in pairs}


def test_setup_then_serve_answers_the_openai_sdk(tmp_path: Path) -> None:
    """From nothing: setup makes the app, secret and role and writes a 0600 env file; `serve` with
    exactly that file answers a chat completion from the OpenAI SDK; a second setup changes nothing."""
    emulator, emulator_url = start_emulator()
    serve = None
    try:
        env_file = tmp_path / "foundry-proxy.env"
        first = run_setup(emulator_url, env_file, "--app-name", "e2e-setup")
        assert first.returncode == 0, first.stdout + first.stderr
        document = json.loads(first.stdout)
        assert document["check"]["ok"] is True
        assert stat.S_IMODE(os.stat(env_file).st_mode) == 0o600
        secret = document["client_secret"]
        assert secret and secret not in first.stderr

        settings = read_env_file(env_file)
        assert settings["AZURE_CLIENT_ID"] == document["app"]["app_id"] != DEMO["CLIENT_ID"]
        serve, proxy_url = start_serve(clean_env(FOUNDRY_PROXY_LISTEN="127.0.0.1:0", **settings))
        answer = make_client(f"{proxy_url}/v1").chat.completions.create(
            model=DEMO["CHAT_DEPLOYMENT"], messages=[{"role": "user", "content": "Hello!"}],
        )
        assert answer.choices[0].message.content

        second = run_setup(emulator_url, env_file, "--app-name", "e2e-setup")
        assert second.returncode == 0, second.stdout + second.stderr
        again = json.loads(second.stdout)
        assert again["changed"] is False
        assert again["client_secret"] is None
        assert read_env_file(env_file) == settings
    finally:
        if serve is not None:
            serve.stop()
        emulator.stop()


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path: Path) -> None:
    """`--dry-run` plans every write, exits 0 and leaves no env file."""
    emulator, emulator_url = start_emulator()
    try:
        env_file = tmp_path / "foundry-proxy.env"
        result = run_setup(emulator_url, env_file, "--dry-run")
        assert result.returncode == 0, result.stdout + result.stderr
        steps = {step["name"]: step["status"] for step in json.loads(result.stdout)["steps"]}
        assert steps["application"] == steps["role"] == steps["env file"] == "planned"
        assert not env_file.exists()
    finally:
        emulator.stop()
