"""The runner's drain: a call parked in the batcher counts until it is answered."""

from __future__ import annotations

# --- Graceful shutdown ---------------------------------------------------------------------


def test_drain_counts_a_call_until_it_is_answered():
    """A call parked in the batcher's queue runs no forward pass, yet the runner must not exit under it."""
    import asyncio

    from model_store.shutdown import CountCalls, DrainBeforeExit

    drain = DrainBeforeExit(idle_s=0.2)
    release = asyncio.Event()

    async def app(scope, receive, send):  # parks POSTs until released, as the batcher's queue does
        if scope["method"] == "POST":
            await release.wait()

    async def nothing():
        return {"type": "http.request"}

    async def ignore(_message):
        pass

    async def scenario() -> list[bool]:
        counted = CountCalls(app, drain)
        call = asyncio.create_task(counted({"type": "http", "method": "POST"}, nothing, ignore))
        await asyncio.sleep(0.5)  # well past idle_s with the call still parked
        seen = [drain.idle()]
        release.set()
        await call
        seen.append(drain.idle())  # just answered: idle only after idle_s more
        await asyncio.sleep(0.3)
        await counted({"type": "http", "method": "GET"}, nothing, ignore)  # probes are not work
        return [*seen, drain.idle()]

    assert asyncio.run(scenario()) == [False, False, True]
