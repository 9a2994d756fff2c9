"""Fixtures of the compatibility suite: the e2e suite's running binaries, plus the result matrix.

The processes (`foundry-proxy demo`, and `emulate` + `serve` as the NO_ROLE app) come from
tests/e2e/conftest.py, loaded here under another module name so both suites share one copy.
Every matrix test records its outcome; at the end of a full run the table in
docs/compatibility.md is checked against them (UPDATE_DOCS=1 rewrites it instead).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

# Before any framework is imported: no network beyond 127.0.0.1, no telemetry.
for _name in list(os.environ):
    if _name.lower() in {"http_proxy", "https_proxy", "all_proxy", "no_proxy"} or _name.startswith("OPENAI_"):
        del os.environ[_name]
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # litellm would fetch its price list at import
os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"  # the Agents SDK would upload traces

import pytest  # noqa: E402

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("e2e_conftest", HERE.parent / "e2e" / "conftest.py")
assert _spec and _spec.loader
e2e = importlib.util.module_from_spec(_spec)
sys.modules["e2e_conftest"] = e2e
_spec.loader.exec_module(e2e)

# The e2e fixtures, used as they are.
demo = e2e.demo
no_role = e2e.no_role
DEMO = e2e.DEMO
Running = e2e.Running

sys.path.insert(0, str(HERE))
import matrix  # noqa: E402

DOC = HERE.parents[1] / "docs" / "compatibility.md"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # type: ignore[no-untyped-def]
    report = yield
    framework = getattr(item, "callspec", None) and item.callspec.params.get("framework")
    capability = item.get_closest_marker("capability")
    if framework is not None and capability is not None:
        matrix.record(framework.key, capability.args[0], report)
    return report


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "capability(name): the matrix column a framework test fills")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not matrix.complete():
        # A partial run (-k, a failed collection) says nothing about the whole table.
        return
    table = matrix.table()
    text = DOC.read_text(encoding="utf-8")
    updated = matrix.replace_table(text, table)
    if os.environ.get("UPDATE_DOCS") == "1":
        if updated != text:
            DOC.write_text(updated, encoding="utf-8")
            print(f"\nwrote the compatibility table to {DOC}")
    elif updated != text:
        print(f"\n{DOC} is out of date; the table this run found:\n{table}\n"
              "Run `UPDATE_DOCS=1 scripts/test` (or the compat step alone) and commit the result.")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
