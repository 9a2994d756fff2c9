"""The command-line contract around the SDK tests: configuration errors and clean shutdown."""

from __future__ import annotations

import subprocess

from conftest import STOP_TIMEOUT, clean_env, proxy_binary, start_demo


def test_serve_without_credentials_is_a_configuration_error() -> None:
    """`serve` with no AZURE_* settings exits with code 2 and one line on stderr naming what is missing;
    it never falls back to the emulator."""
    result = subprocess.run(
        [str(proxy_binary()), "serve"],
        env=clean_env(FOUNDRY_PROXY_LISTEN="127.0.0.1:0", RUST_LOG="info"),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=STOP_TIMEOUT,
    )
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    assert "AZURE_" in lines[0] or "FOUNDRY_ENDPOINT" in lines[0], lines[0]
    assert "listening" not in result.stdout


def test_demo_stops_cleanly_on_sigterm() -> None:
    """`demo` exits with code 0 soon after SIGTERM (graceful shutdown, no kill needed)."""
    process, _proxy_url, _emulator_url = start_demo()
    process.wait_ready(_proxy_url)
    process.proc.terminate()
    try:
        code = process.proc.wait(timeout=STOP_TIMEOUT)
    finally:
        process.stop()
    assert code == 0, process.describe()
