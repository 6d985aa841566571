"""pairx.core.allocator: glibc keeps freed tensor memory for reuse once tuned, and gives it
back on request."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")

_PROBE = textwrap.dedent("""
    import ctypes, json, os, sys
    from pairx.core import allocator
    applied = allocator.tune_allocator()
    again = allocator.tune_allocator()
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    page = os.sysconf("SC_PAGE_SIZE")
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page
    size = 96 << 20
    ptr = libc.malloc(size)
    ctypes.memset(ptr, 1, size)
    pin = libc.malloc(1 << 20)  # above the block: its memory is a hole inside the heap once freed
    ctypes.memset(pin, 1, 1 << 20)
    touched = rss()
    libc.free(ptr)
    freed = rss()
    trimmed = allocator.release_free_memory()
    print(json.dumps({"applied": applied, "again": again, "released": touched - freed,
                      "trimmed": trimmed, "after_trim": touched - rss()}))
""")


def _probe(env: dict[str, str]) -> dict[str, object]:
    import json

    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                         check=True, env={**os.environ, **env})
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_tuned_process_keeps_a_freed_block_for_reuse() -> None:
    tuned = _probe({"PAIRX_MALLOC": ""})
    assert tuned["applied"] is True and tuned["again"] is True
    # a 96 MB block is below the fixed mmap threshold: it comes from the heap and stays there
    assert int(tuned["released"]) < (16 << 20)  # type: ignore[call-overload]
    # until release_free_memory gives its pages back, though it lies below a block in use
    assert tuned["trimmed"] is True
    assert int(tuned["after_trim"]) > (80 << 20)  # type: ignore[call-overload]


def test_system_setting_is_left_alone() -> None:
    plain = _probe({"PAIRX_MALLOC": "system"})
    assert plain["applied"] is False and plain["trimmed"] is False
    # glibc's default: a block above its (dynamic, at most 32 MB) threshold goes back at once
    assert int(plain["released"]) > (80 << 20)  # type: ignore[call-overload]


def test_the_pairx_command_tunes_its_process() -> None:
    code = ("import sys\nfrom pairx.cli.main import main\nfrom pairx.core import allocator\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(allocator._applied)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PAIRX_MALLOC": ""})
    assert out.stdout.strip().splitlines()[-1] == "True"
