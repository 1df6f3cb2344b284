"""Starts the real `converge serve` (binary in $CONVERGE_BINARY, set by ctest) for the tests.

A fresh temp dir holds its data and config; it listens on 127.0.0.1 with a port the OS picks,
read back from its "listening on" line (no race); the process is killed and the dir removed at
the end, and dies with the test process (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from typing import Callable

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def binary() -> str:
    path = os.environ.get("CONVERGE_BINARY", "")
    if not path:
        raise unittest.SkipTest("CONVERGE_BINARY is not set (run the suite through ctest)")
    return path


class ServeProcess:
    def __init__(self, config_yaml: str = "", data_dir: str | None = None) -> None:
        self.dir = tempfile.mkdtemp(prefix="converge-py-")
        self.data_dir = data_dir or os.path.join(self.dir, "data")
        self.config_yaml = config_yaml
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ServeProcess":
        args = [binary(), "serve", "--listen", "127.0.0.1:0", "--data-dir", self.data_dir]
        if self.config_yaml:
            path = os.path.join(self.dir, "converge.yaml")
            with open(path, "w") as f:
                f.write(self.config_yaml)
            args += ["--config", path]
        log = open(os.path.join(self.dir, "serve.log"), "ab")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log,
                                     preexec_fn=_die_with_parent)
        log.close()
        assert self.proc.stdout is not None
        text = b""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if r:
                chunk = os.read(self.proc.stdout.fileno(), 512)
                if not chunk:
                    break
                text += chunk
                m = re.search(rb"listening on https?://127\.0\.0\.1:(\d+)", text)
                if m:
                    self.port = int(m.group(1))
                    return self
        log_text = self.log()
        self.kill()
        raise RuntimeError(f"converge serve did not start: {text!r} {log_text}")

    def log(self) -> str:
        try:
            with open(os.path.join(self.dir, "serve.log"), "rb") as f:
                return f.read()[-4000:].decode("utf-8", "replace")
        except OSError:
            return ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_until(cond: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Polls ``cond`` until true; fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def python_child(script: str, *args: str, env: dict[str, str] | None = None
                 ) -> subprocess.Popen[bytes]:
    """Runs a helper script of tests/ in a child interpreter that imports this package."""
    here = os.path.dirname(os.path.abspath(__file__))
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.path.dirname(here) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    return subprocess.Popen([sys.executable, os.path.join(here, script), *args], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_die_with_parent)
