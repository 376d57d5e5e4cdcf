"""The examples (examples/agent_exec.py, examples/agent_http.py) run from a
checkout on the standard library, through the real server; the package
imports from clients/python without installation, and installs with pip."""
from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys

import pytest

import agentwire
from conftest import AGENTS, EXAMPLES, PKG_ROOT, PYTHON, WAIT, check_seqs, run_of, uid

NO_DEPS = f"{PYTHON} -I -B {AGENTS / 'no_deps.py'}"


def test_the_package_comes_from_the_checkout():
    assert agentwire.__file__.startswith(str(PKG_ROOT / "agentwire")), agentwire.__file__


def test_agent_events_errors_and_tokens_need_only_the_standard_library(tmp_path):
    check = tmp_path / "check.py"
    check.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(PKG_ROOT)!r})\n"
        "import agentwire, agentwire.agent, agentwire.events, agentwire.errors\n"
        "import agentwire.tokens, agentwire.retry\n"
        "agentwire.make_token('s', 'u'); agentwire.RunRequest; agentwire.InvalidEvent\n"
        "agentwire.run_exec_agent; agentwire.make_http_server; agentwire.asgi_app\n"
        "print('ok' if not {'httpx', 'websockets', 'aiohttp'} & set(sys.modules) else 'loaded')\n"
    )
    out = subprocess.run([PYTHON, "-I", "-B", str(AGENTS / "no_deps.py"), str(check)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    # and the blocker works: the publisher needs httpx
    check.write_text(f"import sys; sys.path.insert(0, {str(PKG_ROOT)!r}); import agentwire; agentwire.Publisher\n")
    out = subprocess.run([PYTHON, "-I", "-B", str(AGENTS / "no_deps.py"), str(check)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "httpx is blocked" in out.stderr


async def test_example_exec_agent_on_the_standard_library(start_server):
    cmd = f"{NO_DEPS} {EXAMPLES / 'agent_exec.py'}"
    srv = start_server("--agent", f"exec:{cmd}")
    user = uid()
    request = "Count the letters in this sentence"
    async with srv.subscriber(user) as sub:
        ack = await sub.start_agent(request)
        events = await sub.collect(run_of(ack["run_id"]), WAIT)
    check_seqs(events)
    types = [e["type"] for e in events]
    assert types[:4] == ["agent_started", "agent_thinking", "tool_executing", "tool_completed"]
    assert set(types[4:-1]) == {"partial_result"}
    letters = sum(1 for c in request if c.isalpha())
    assert events[3]["results"]["letters"] == letters
    done = events[-1]
    assert done["status"] == "success"
    assert done["final_response"] == f"Your request has {letters} letters, {events[3]['results']['vowels']} of them vowels."
    assert "".join(e["content"] for e in events if e["type"] == "partial_result").strip() == done["final_response"]
    await srv.await_log(lambda e: e.get("msg") == "agent stderr" and str(e.get("line")).startswith(f"run {ack['run_id']}:"),
                        what="the example's stderr line")


async def test_example_http_agent_on_the_standard_library(start_server):
    proc = await asyncio.create_subprocess_exec(
        PYTHON, "-I", "-B", str(AGENTS / "no_deps.py"), str(EXAMPLES / "agent_http.py"), "--port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), WAIT)
        m = re.match(rb"agent listening on (http://\S+)", line)
        assert m, line
        srv = start_server("--agent", f"http:{m.group(1).decode()}")
        user = uid()
        async with srv.subscriber(user) as sub:
            ack = await sub.start_agent("one two three four")
            events = await sub.collect(run_of(ack["run_id"]), WAIT)
            assert [e["type"] for e in events] == [
                "agent_started", "agent_thinking", "tool_executing", "tool_completed",
                "partial_result", "partial_result", "partial_result", "partial_result",
                "agent_completed"]
            assert events[-1]["final_response"] == "four three two one"
    finally:
        if proc.returncode is None:
            proc.kill()
        await asyncio.wait_for(proc.wait(), WAIT)


def test_pip_install_gives_the_package_with_py_typed(tmp_path):
    try:
        import setuptools  # noqa: F401  (pip builds with it, offline)
    except ImportError:  # pragma: no cover
        pytest.skip("setuptools is not installed")
    src = tmp_path / "src"
    shutil.copytree(PKG_ROOT, src, ignore=shutil.ignore_patterns("tests", "__pycache__", "build",
                                                                  "*.egg-info"))
    target = tmp_path / "site"
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                          "--no-build-isolation", "--no-index", "--target", str(target), str(src)],
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    assert (target / "agentwire" / "py.typed").exists()
    check = subprocess.run([sys.executable, "-I", "-B", "-c",
                            "import sys; sys.path.insert(0, sys.argv[1]); import agentwire;"
                            "print(agentwire.__file__); agentwire.Publisher",
                            str(target)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip().startswith(str(target))
