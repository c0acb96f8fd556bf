"""An asyncio event loop on a daemon thread, for in-process servers that must keep serving
whatever the test's own loop is doing.

The fault proxy and the fake LLM are asyncio servers. On the test's loop they would stop
serving whenever the test blocks it (a synchronous ``subprocess.run``, ``proc.wait()``, a sync
fixture), and a bot subprocess talking to them would hang for a reason that has nothing to do
with the fault under test. On their own loop they keep running; the test talks to them through
thread-safe calls (``call``/``run``) and waits on them with ``threading.Condition``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class BackgroundLoop:
    """``start()`` a loop on a daemon thread; ``run(coro)`` runs a coroutine there and returns
    its result (blocking the caller briefly); ``call(fn)`` runs a plain function there;
    ``stop()`` cancels what is left and joins the thread. Idempotent stop."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._stopped = False

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    def start(self) -> BackgroundLoop:
        self._thread.start()
        return self

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coro`` on the background loop and wait for its result (from another thread)."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("BackgroundLoop.run called from its own thread (would deadlock)")
        return self.submit(coro).result(timeout)

    def call(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Run ``fn()`` on the background loop's thread (where its objects live) and return."""

        async def wrapper() -> T:
            return fn()

        return self.run(wrapper(), timeout)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
