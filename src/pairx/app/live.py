"""A real ``pairx serve`` process in a child process, on a free loopback port.

Used by the durability, worker and browser tests and by ``benchmarks/bench_review.py``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """``pairx serve PROJ`` in a child process; :meth:`kill` is ``kill -9``."""

    def __init__(self, project: Path, *, worker: bool) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "pairx.cli.main", "serve", str(project),
               "--port", str(self.port)] + ([] if worker else ["--no-worker"])
        self.log = open(project / f"serve-{self.port}.log", "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/api/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
            if self.proc.poll() is not None:
                break
        self.kill()
        raise RuntimeError(f"pairx serve did not start: {self.log_text()}")

    def log_text(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-2000:]

    def client(self) -> tuple[httpx.Client, str]:
        """An HTTP client with a session cookie, and its CSRF token."""
        c = httpx.Client(base_url=self.url, timeout=30)
        html = c.get("/").text
        m = re.search(r'name="csrf-token" content="([0-9a-f]+)"', html)
        assert m, html[:500]
        return c, m.group(1)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead too
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return True
