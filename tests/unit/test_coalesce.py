"""Coalescer: requests that arrive while calls are out go together in the next call, each answered with its own rows."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from model_store.coalesce import Coalescer


class Runner:
    """A stand-in runner: answers each row with its own first value after `delay`, recording call sizes."""

    def __init__(self, delay: float = 0.02, fail: bool = False) -> None:
        self.delay, self.fail, self.calls = delay, fail, []

    async def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.calls.append(len(batch))
        await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("runner down")
        return batch.reshape(len(batch), -1)[:, :1] * 2


def request(first: int, n: int) -> np.ndarray:
    """n rows whose first values are first, first+1, ..."""
    return np.arange(first, first + n, dtype=np.float32).reshape(n, 1, 1, 1) * np.ones((n, 3, 2, 2), np.float32)


def test_concurrent_requests_share_calls_and_each_gets_its_own_rows_in_order():
    runner = Runner()

    async def main() -> list[np.ndarray]:
        coalesce = Coalescer(runner, max_images=64, max_in_flight=2)
        return await asyncio.gather(*(coalesce(request(10 * i, 1 + i % 3)) for i in range(20)))

    answers = asyncio.run(main())
    for i, answer in enumerate(answers):
        np.testing.assert_array_equal(answer[:, 0], 2 * np.arange(10 * i, 10 * i + 1 + i % 3))
    assert sum(runner.calls) == sum(1 + i % 3 for i in range(20))
    assert len(runner.calls) < 20
    assert max(runner.calls) > 3


def test_a_call_never_exceeds_max_images_unless_one_request_does():
    runner = Runner()

    async def main() -> None:
        coalesce = Coalescer(runner, max_images=8, max_in_flight=1)
        await asyncio.gather(*(coalesce(request(0, 3)) for _ in range(10)), coalesce(request(0, 12)))

    asyncio.run(main())
    assert sorted(runner.calls)[-1] == 12
    assert all(n <= 8 for n in runner.calls if n != 12)


def test_at_most_max_in_flight_calls_are_out_at_once():
    out, peak = 0, 0

    async def call(batch: np.ndarray) -> np.ndarray:
        nonlocal out, peak
        out += 1
        peak = max(peak, out)
        await asyncio.sleep(0.01)
        out -= 1
        return batch

    async def main() -> None:
        coalesce = Coalescer(call, max_images=2, max_in_flight=2)
        await asyncio.gather(*(coalesce(request(0, 1)) for _ in range(30)))

    asyncio.run(main())
    assert peak == 2


def test_a_failed_call_fails_every_request_in_it_and_the_next_calls_still_run():
    runner = Runner(fail=True)

    async def main() -> tuple[list, np.ndarray]:
        coalesce = Coalescer(runner, max_images=64, max_in_flight=1)
        failed = await asyncio.gather(*(coalesce(request(i, 1)) for i in range(5)), return_exceptions=True)
        runner.fail = False
        return failed, await coalesce(request(7, 2))

    failed, later = asyncio.run(main())
    assert all(isinstance(e, RuntimeError) and str(e) == "runner down" for e in failed)
    np.testing.assert_array_equal(later[:, 0], [14, 16])


def test_a_request_whose_client_left_is_not_computed():
    runner = Runner(delay=0.05)

    async def main() -> None:
        coalesce = Coalescer(runner, max_images=64, max_in_flight=1)
        first = asyncio.ensure_future(coalesce(request(0, 1)))
        await asyncio.sleep(0.01)  # the first call is out; the next request queues
        left = asyncio.ensure_future(coalesce(request(100, 5)))
        stays = asyncio.ensure_future(coalesce(request(200, 2)))
        await asyncio.sleep(0)
        left.cancel()
        await first
        np.testing.assert_array_equal((await stays)[:, 0], [400, 402])
        with pytest.raises(asyncio.CancelledError):
            await left

    asyncio.run(main())
    assert runner.calls == [1, 2]
