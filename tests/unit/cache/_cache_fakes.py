"""Test doubles shared by the cache unit tests."""

from __future__ import annotations

from typing import Any


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RoundTrips:
    """Counts round trips a client makes: one per command or per pipeline execute."""

    def __init__(self, client: Any) -> None:
        self.count = 0
        self.commands: list[tuple[Any, ...]] = []
        orig_exec = client.execute_command
        orig_pipe = client.pipeline

        async def execute_command(*args: Any, **kw: Any) -> Any:
            self.count += 1
            self.commands.append(args)
            return await orig_exec(*args, **kw)

        def pipeline(*a: Any, **kw: Any) -> Any:
            pipe = orig_pipe(*a, **kw)
            orig = pipe.execute

            async def execute(*ea: Any, **ekw: Any) -> Any:
                self.count += 1
                self.commands.extend(tuple(c[0]) for c in pipe.command_stack)
                return await orig(*ea, **ekw)

            pipe.execute = execute
            return pipe

        client.execute_command = execute_command
        client.pipeline = pipeline
