"""Stage threads: items flow in order through bounded queues, and the first failure anywhere
stops every stage and is raised in the calling thread."""

import threading

import pytest

from instseg.inference.stages import END, StageThreads


def _stage_threads_alive(name: str) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(f"instseg-{name}-")]


def _produce(threads, out, count):
    for value in range(count):
        threads.put(out, value)
    threads.put(out, END)


def test_items_flow_in_order_through_small_queues():
    threads = StageThreads("order", queue_size=2)
    numbers, doubled = threads.queue(), threads.queue()
    received = []

    def double():
        while (item := threads.get(numbers)) is not END:
            threads.put(doubled, 2 * item)
        threads.put(doubled, END)

    def collect():
        while (item := threads.get(doubled)) is not END:
            received.append(item)

    threads.spawn("double", double)
    threads.spawn("collect", collect)
    threads.run(lambda: _produce(threads, numbers, 50))
    assert received == [2 * v for v in range(50)]
    assert _stage_threads_alive("order") == []


def test_a_failing_stage_stops_a_producer_blocked_on_a_full_queue():
    threads = StageThreads("fail", queue_size=1)
    items = threads.queue()

    def consume_two_then_fail():
        threads.get(items)
        threads.get(items)
        raise OSError("disk full")

    threads.spawn("consumer", consume_two_then_fail)
    # The producer would block forever on the full queue without the failure reaching it.
    with pytest.raises(OSError, match="disk full"):
        threads.run(lambda: _produce(threads, items, 1000))
    assert threads.stop.is_set()
    assert _stage_threads_alive("fail") == []


def test_a_failure_in_the_calling_thread_stops_the_stage_threads():
    threads = StageThreads("caller", queue_size=4)
    items = threads.queue()
    consumed = []

    def consume():
        while (item := threads.get(items)) is not END:
            consumed.append(item)

    def produce_then_interrupt():
        threads.put(items, 1)
        raise KeyboardInterrupt

    threads.spawn("consumer", consume)
    with pytest.raises(KeyboardInterrupt):
        threads.run(produce_then_interrupt)
    assert consumed in ([], [1])
    assert _stage_threads_alive("caller") == []


def test_only_the_first_real_failure_is_raised():
    threads = StageThreads("first", queue_size=1)
    items = threads.queue()

    def fail():
        raise ValueError("first")

    def wait_then_fail():
        threads.stop.wait()
        raise RuntimeError("second")

    threads.spawn("fails", fail)
    threads.spawn("waits", wait_then_fail)
    with pytest.raises(ValueError, match="first"):
        threads.run(lambda: _produce(threads, items, 100))
    assert [type(e) for e in threads.errors] == [ValueError, RuntimeError]
