"""The worker exits with its server, also when the server dies while the worker is starting."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pairx.app.live import pid_alive

# a "server" that starts the worker and is killed (-9) at once, before the worker's first line
_SERVER = """
import os, signal, sys
from pairx.app.project import Project
from pairx.app.worker import start_worker
proc = start_worker(Project.open(sys.argv[1]))
print(proc.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_worker_exits_within_a_second_of_a_kill_9_while_it_starts(fresh_project: Path,
                                                                       tmp_path: Path) -> None:
    out = tmp_path / "server.out"  # a file, not a pipe: the worker inherits it
    with out.open("w") as fh:
        server = subprocess.Popen([sys.executable, "-c", _SERVER, str(fresh_project)],
                                  stdout=fh, stderr=subprocess.STDOUT)
        assert server.wait(timeout=60) == -9, out.read_text()
    died = time.time()
    worker = int(out.read_text().split()[0])
    while pid_alive(worker) and time.time() < died + 20:
        time.sleep(0.05)
    lived = time.time() - died
    assert not pid_alive(worker), "the worker outlived its server by 20 s"
    # its start-up (interpreter and imports, about 0.7 s here) and then at most one poll; the
    # engine (model) it would load next takes seconds and must not be waited for
    assert lived < 2.0, f"the worker lived {lived:.2f} s after its server"


def test_the_watchdog_exits_when_the_parent_changes(tmp_path: Path) -> None:
    child = tmp_path / "child.py"  # told the wrong parent, it must not get past watch_parent
    child.write_text(
        "import sys\n"
        "from pairx.app.worker import watch_parent\n"
        "watch_parent(int(sys.argv[1]))\n"
        "print('went on', flush=True)\n")
    done = subprocess.run([sys.executable, str(child), "1"], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0 and "went on" not in done.stdout


def test_the_watchdog_thread_notices_a_new_parent(monkeypatch: pytest.MonkeyPatch) -> None:
    from pairx.app import worker

    parents = iter([4242, 4242, 4242])
    exited = threading.Event()

    def fake_exit(code: int) -> None:
        exited.set()  # returning ends the watchdog's function, as exiting would

    monkeypatch.setattr(worker.os, "getppid", lambda: next(parents, 1))
    monkeypatch.setattr(worker.os, "_exit", fake_exit)
    monkeypatch.setattr(worker, "PARENT_POLL_SECONDS", 0.01)
    thread = worker.watch_parent(4242)
    assert exited.wait(5) and thread.daemon
    thread.join(5)
