"""The batcher: batches close at the cap or the wait, never exceed the cap, survive failures, drain on stop."""
import asyncio
import threading

import pytest
import torch

from cnnmode.serve.batcher import Batcher, QueueFull


def _run(coro):
    return asyncio.run(coro)


def test_concurrent_images_are_batched_and_never_over_the_cap():
    sizes = []

    def forward(x):
        sizes.append(len(x))
        return x.sum((1, 2, 3), keepdim=False)[:, None].repeat(1, 3)

    async def main():
        b = Batcher(forward, max_batch_size=8, max_wait_ms=30)
        b.start()
        outs = await asyncio.gather(*(b.infer(torch.full((2, 1, 2, 2), float(i))) for i in range(15)))
        await b.stop()
        return outs

    outs = _run(main())
    assert sum(sizes) == 30 and max(sizes) <= 8 and max(sizes) > 1
    assert all(torch.equal(o[:, 0], torch.full((2,), 4.0 * i)) for i, o in enumerate(outs))  # each gets its own rows


def test_a_batch_waits_only_while_a_request_is_on_its_way():
    sizes = []

    def forward(x):
        sizes.append(len(x))
        return x.flatten(1)

    async def main():
        b = Batcher(forward, max_batch_size=8, max_wait_ms=2000)
        b.start()
        start = asyncio.get_running_loop().time()
        await b.infer(torch.zeros(1, 1, 1, 1))  # alone: nobody else is coming, so no 2 s wait
        alone = asyncio.get_running_loop().time() - start

        async def late():  # a request still decoding when the first image is queued
            with b.arriving():
                await asyncio.sleep(0.2)
            return await b.infer(torch.ones(1, 1, 1, 1))

        task = asyncio.create_task(late())
        await asyncio.sleep(0.01)
        both = await asyncio.gather(b.infer(torch.zeros(1, 1, 1, 1)), task)
        await b.stop()
        return alone, both

    alone, both = _run(main())
    assert alone < 1.0 and sizes == [1, 2]  # the second batch waited for the decoding request and took it
    assert both[1].item() == 1.0


def test_a_failing_batch_fails_its_requests_only_and_the_loop_goes_on():
    calls = []

    def forward(x):
        calls.append(len(x))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return torch.zeros(len(x), 3)

    async def main():
        b = Batcher(forward, max_batch_size=4, max_wait_ms=1)
        b.start()
        with pytest.raises(RuntimeError, match="boom"):
            await b.infer(torch.zeros(1, 1, 2, 2))
        out = await b.infer(torch.zeros(2, 1, 2, 2))
        await b.stop()
        return out

    assert _run(main()).shape == (2, 3)


def test_a_full_queue_is_refused_and_stop_drains_what_was_accepted():
    release = threading.Event()

    def forward(x):
        release.wait(10)
        return torch.zeros(len(x), 3)

    async def main():
        b = Batcher(forward, max_batch_size=2, max_wait_ms=1, max_queue=4)
        b.start()
        first = asyncio.create_task(b.infer(torch.zeros(2, 1, 2, 2)))
        await asyncio.sleep(0.05)  # its batch is in the inference thread, held there
        second = asyncio.create_task(b.infer(torch.zeros(2, 1, 2, 2)))
        await asyncio.sleep(0.01)  # queued: 2 images waiting
        with pytest.raises(QueueFull):
            await b.infer(torch.zeros(3, 1, 2, 2))
        release.set()
        await b.stop()  # drains: both accepted requests are answered
        return [first.result().shape, second.result().shape]

    assert _run(main()) == [(2, 3), (2, 3)]
