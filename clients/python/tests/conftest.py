"""Fixtures of the Python SDK's tests: the real agentwire binary on a free
loopback port, with a random JWT secret and API key, stopped after each test.

The package is imported from clients/python (this directory's parent): no
``pip install`` is needed. ``async def`` tests run in a fresh event loop each,
under an overall time limit (the ``timeout`` marker, default 120 s)."""
from __future__ import annotations

import asyncio
import inspect
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest

HERE = Path(__file__).resolve().parent
PKG_ROOT = HERE.parent
REPO = PKG_ROOT.parent.parent
sys.path.insert(0, str(PKG_ROOT))
# everything here talks to 127.0.0.1: a proxy from the environment must not get in the way
for _name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
    os.environ.pop(_name, None)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

import agentwire  # noqa: E402

BIN = os.environ.get("AGENTWIRE_BIN") or str(REPO / "build" / "agentwire")
PYTHON = sys.executable
AGENTS = HERE / "agents"
EXAMPLES = REPO / "examples"

#: Default wait for one expected thing, generous for a loaded two-core machine.
WAIT = 20.0
DEFAULT_TEST_TIMEOUT = 120.0


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "timeout(seconds): overall limit of an async test")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: Any) -> Optional[bool]:
    func = pyfuncitem.obj
    if not inspect.iscoroutinefunction(func):
        return None
    marker = pyfuncitem.get_closest_marker("timeout")
    limit = float(marker.args[0]) if marker else DEFAULT_TEST_TIMEOUT
    args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}

    async def main() -> None:
        await asyncio.wait_for(func(**args), limit)

    asyncio.run(main())
    return True


def uid(prefix: str = "u") -> str:
    return f"{prefix}_{secrets.token_hex(6)}"


class Server:
    """One agentwire process."""

    def __init__(self, args: List[str], port: int = 0, env: Optional[Dict[str, str]] = None,
                 secret: Optional[str] = None, api_key: Optional[str] = None) -> None:
        if not os.access(BIN, os.X_OK):
            raise RuntimeError(f"agentwire binary not found at {BIN} (scripts/build.sh release, "
                               "or set AGENTWIRE_BIN)")
        self.secret = secret or secrets.token_hex(24)
        self.api_key = api_key or f"ak_{secrets.token_hex(16)}"
        self.args = ["--listen", f"127.0.0.1:{port}", "--log-format", "json",
                     "--jwt-secret", self.secret, "--api-key", self.api_key,
                     "--jwt-leeway-s", "0",
                     "--log-rate-limit", "0",  # the tests wait for log lines: drop none
                     *args]
        self.logs: List[Dict[str, Any]] = []
        self._cond = threading.Condition()
        self._stderr_tail: List[str] = []
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTWIRE_")}
        full_env.update(env or {})
        self.proc = subprocess.Popen([BIN, *self.args], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env=full_env)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        entry = self.wait_log(lambda e: e.get("msg") == "listening" and isinstance(e.get("addr"), str),
                              timeout=30, what="agentwire to log listening")
        self.port = int(entry["addr"].rsplit(":", 1)[1])
        self.http_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                entry = {"unparsed": line}
            with self._cond:
                if not isinstance(entry, dict):
                    entry = {"unparsed": line}
                self.logs.append(entry)
                self._stderr_tail.append(line)
                del self._stderr_tail[:-200]
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def describe(self) -> str:
        with self._cond:
            return "\n".join(self._stderr_tail[-60:])

    def wait_log(self, pred: Callable[[Dict[str, Any]], bool], timeout: float = WAIT,
                 what: str = "a log line") -> Dict[str, Any]:
        """The first log entry matching pred, waiting for it (no polling)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            seen = 0
            while True:
                for entry in self.logs[seen:]:
                    if pred(entry):
                        return entry
                seen = len(self.logs)
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"timed out waiting for {what}; log:\n{self.describe()}")
                self._cond.wait(left)

    async def await_log(self, pred: Callable[[Dict[str, Any]], bool], timeout: float = WAIT,
                        what: str = "a log line") -> Dict[str, Any]:
        return await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.wait_log(pred, timeout, what))

    def token(self, user: str, **claims: Any) -> str:
        return agentwire.make_token(self.secret, user, **claims)

    def publisher(self, **kw: Any) -> "agentwire.Publisher":
        return agentwire.Publisher(self.http_url, self.api_key, **kw)

    def async_publisher(self, **kw: Any) -> "agentwire.AsyncPublisher":
        return agentwire.AsyncPublisher(self.http_url, self.api_key, **kw)

    def subscriber(self, user: str, **kw: Any) -> "agentwire.Subscriber":
        kw.setdefault("backoff_base", 0.05)
        kw.setdefault("backoff_max", 1.0)
        kw.setdefault("connect_timeout", WAIT)
        kw.setdefault("request_timeout", WAIT)
        if "ticket" not in kw and "token" not in kw:
            kw["token"] = self.token(user)
        return agentwire.Subscriber(self.ws_url, **kw)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@pytest.fixture
def start_server() -> Any:
    """start_server(*args, port=0, env=None, secret=None, api_key=None) -> Server; all stopped after the test."""
    servers: List[Server] = []

    def start(*args: str, port: int = 0, env: Optional[Dict[str, str]] = None,
              secret: Optional[str] = None, api_key: Optional[str] = None) -> Server:
        srv = Server(list(args), port=port, env=env, secret=secret, api_key=api_key)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


@pytest.fixture
def server(start_server: Any) -> Server:
    """A server with the default flags."""
    return start_server()


def run_of(run_id: str) -> Callable[[Dict[str, Any]], bool]:
    """Matches the agent_completed of run_id."""
    return lambda e: e.get("type") == "agent_completed" and e.get("run_id") == run_id


def check_seqs(events: List[Dict[str, Any]], first: int = 1) -> None:
    """seq first, first+1, … without gap or duplicate, one epoch."""
    assert [e["seq"] for e in events] == list(range(first, first + len(events))), \
        [e["seq"] for e in events]
    assert len({e["epoch"] for e in events}) <= 1
