"""The write-coalescer behind the Postgres fallbacks of buffered counters."""

from __future__ import annotations

import asyncio
import operator

from db.repositories.coalesce import CoalescingWriter


async def test_concurrent_adds_merge_into_few_batches_and_all_are_applied() -> None:
    applied: list[dict[str, int]] = []

    async def apply(batch: dict[str, int]) -> None:
        await asyncio.sleep(0.01)
        applied.append(batch)

    writer: CoalescingWriter[str, int] = CoalescingWriter(apply, operator.add)
    await asyncio.gather(*(writer.add(f"k{i % 3}", 1) for i in range(1000)))
    totals: dict[str, int] = {}
    for batch in applied:
        for key, value in batch.items():
            totals[key] = totals.get(key, 0) + value
    assert totals == {"k0": 334, "k1": 333, "k2": 333}
    assert writer.batches <= 3  # not one transaction per write


async def test_a_caller_returns_only_after_its_batch_is_applied() -> None:
    applying, done = asyncio.Event(), asyncio.Event()

    async def apply(batch: dict[str, float]) -> None:
        applying.set()
        await done.wait()

    writer: CoalescingWriter[str, float] = CoalescingWriter(apply, max)
    task = asyncio.create_task(writer.add("u", 1.0))
    async with asyncio.timeout(30):  # a hang guard
        await applying.wait()  # its batch is being applied ...
    assert not task.done()  # ... and the caller is still waiting for it
    done.set()
    await task


async def test_failure_reaches_the_batch_and_the_next_batch_still_runs() -> None:
    calls = 0

    async def apply(batch: dict[str, int]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("postgres down")

    writer: CoalescingWriter[str, int] = CoalescingWriter(apply, operator.add)
    results = await asyncio.gather(writer.add("a", 1), writer.add("b", 1), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    await writer.add("c", 1)  # recovered
    assert calls == 2
