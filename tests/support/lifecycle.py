"""Waiting for a condition and checking that a call left no tasks or threads behind."""

from __future__ import annotations

import asyncio
import threading
import time


async def wait_until(cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    """Poll ``cond()`` every 50 ms; AssertionError naming ``what`` if it is still false after ``timeout`` s."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def snapshot() -> tuple[set[asyncio.Task], set[threading.Thread]]:
    return set(asyncio.all_tasks()), set(threading.enumerate())


async def assert_no_leaks(before: tuple[set[asyncio.Task], set[threading.Thread]], timeout: float = 8.0) -> None:
    """Every task and thread started since ``before`` is gone (asyncio's shared executor threads excepted)."""
    tasks0, threads0 = before
    end = time.monotonic() + timeout
    while True:
        tasks = {t for t in asyncio.all_tasks() - tasks0 if t is not asyncio.current_task() and not t.done()}
        threads = {t for t in set(threading.enumerate()) - threads0
                   if t.is_alive() and not t.name.startswith("asyncio_")}
        if not tasks and not threads:
            return
        if time.monotonic() > end:
            names = sorted(t.get_name() + ":" + repr(t.get_coro())[:80] for t in tasks)
            raise AssertionError(f"leaked tasks {names} threads {sorted(t.name for t in threads)}")
        await asyncio.sleep(0.1)
