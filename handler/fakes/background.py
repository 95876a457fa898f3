"""An async resource (a server, a set of servers) on its own event loop in a thread, for
synchronous code that drives other processes: a test, a benchmark, `loadtest`."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Generic, TypeVar

T = TypeVar("T")


class InBackground(Generic[T]):
    """`with InBackground(lambda: SomeServer(...)) as server:` enters the async context manager
    on a private loop in a daemon thread and hands back what it yields; leaving stops it."""

    def __init__(
        self, factory: Callable[[], AbstractAsyncContextManager[T]], start_timeout: float = 30.0
    ) -> None:
        self._factory = factory
        self._start_timeout = start_timeout
        self._ready = threading.Event()
        self._value: T | None = None
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.native_id: int | None = None
        """The thread's id as the OS knows it (for per-thread CPU accounting)."""

    async def _main(self) -> None:
        self.native_id = threading.get_native_id()
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            async with self._factory() as value:
                self._value = value
                self._ready.set()
                await self._stop.wait()
        except BaseException as e:  # handed to the thread that waits in __enter__
            self._error = e
            self._ready.set()

    def __enter__(self) -> T:
        self._thread.start()
        if not self._ready.wait(self._start_timeout):
            raise RuntimeError(f"background resource not ready after {self._start_timeout:.0f} s")
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run `fn` on the resource's loop (what touches its servers must) and return its result."""
        if self._loop is None:
            raise RuntimeError("background resource not started")

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)
