# SPDX-License-Identifier: GPL-2.0-only
"""A result the event loop hands out before it has it: resolved (or failed) later, on a later turn.

The loop has no threads and no asyncio, so this is all a promise needs to
be: callbacks run in the loop, at once when the result is already there.
A control request that waits for an update (`reconcile` during a kexec
load) is answered through one of these.
"""

from collections.abc import Callable
from typing import Generic, TypeVar, cast

T = TypeVar("T")
U = TypeVar("U")


class Later(Generic[T]):
    __slots__ = ("_done", "_value", "_error", "_callbacks")

    def __init__(self) -> None:
        self._done = False
        self._value: T | None = None
        self._error: Exception | None = None
        self._callbacks: list[Callable[[Later[T]], None]] = []

    @property
    def done(self) -> bool:
        return self._done

    def resolve(self, value: T) -> None:
        self._settle(value, None)

    def fail(self, error: Exception) -> None:
        self._settle(None, error)

    def result(self) -> T:
        """The value, or the error raised; only once done."""
        assert self._done, "Later.result() before it was resolved"
        if self._error is not None:
            raise self._error
        return cast(T, self._value)

    def on_done(self, callback: "Callable[[Later[T]], None]") -> None:
        if self._done:
            callback(self)
        else:
            self._callbacks.append(callback)

    def then(self, fn: Callable[[T], U]) -> "Later[U]":
        """A Later of fn(value); an error, this one's or fn's, passes through."""
        out: Later[U] = Later()

        def step(src: Later[T]) -> None:
            try:
                out.resolve(fn(src.result()))
            except Exception as err:
                out.fail(err)

        self.on_done(step)
        return out

    def otherwise(self, fn: Callable[[Exception], T]) -> "Later[T]":
        """The same value, or fn(error) in place of an error."""
        out: Later[T] = Later()

        def step(src: Later[T]) -> None:
            try:
                value = src.result()
            except Exception as err:
                value = fn(err)
            out.resolve(value)

        self.on_done(step)
        return out

    def _settle(self, value: T | None, error: Exception | None) -> None:
        assert not self._done, "a Later is resolved once"
        self._done, self._value, self._error = True, value, error
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(self)
