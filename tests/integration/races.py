"""Writes made at the same moment, each on its own thread and database connection."""

import threading
import time
from collections.abc import Callable
from typing import Any

from django.db import connection, transaction


def at_once(*calls: Callable[[], Any]) -> list[Any]:
    """Start every call at the same moment; what each returned, or the exception it raised."""
    start = threading.Barrier(len(calls))
    outcomes: list[Any] = [None] * len(calls)

    def run(i: int, call: Callable[[], Any]) -> None:
        try:
            start.wait()
            outcomes[i] = call()
        except Exception as error:  # what each call ended with is what the test looks at
            outcomes[i] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


def twice(call: Callable[[], Any]) -> list[Any]:
    """The same call made twice at once: a double click, or a client sending its request again."""
    return at_once(call, call)


def overlapping(first: Callable[[], Any], second: Callable[[], Any], *, held: float = 0.5) -> list[Any]:
    """`first` done in a transaction kept open for `held` seconds while `second` starts: two
    requests overlapping, for certain. What each returned, or the exception it raised."""
    done = threading.Event()

    def hold_open() -> Any:
        try:
            with transaction.atomic():
                outcome = first()
                done.set()
                time.sleep(held)
            return outcome
        finally:
            done.set()

    def after_first() -> Any:
        done.wait(timeout=30)
        return second()

    return at_once(hold_open, after_first)
