"""The compact FIFO behaves like a deque."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from statesession._core.fifo import Fifo


class FifoModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.fifo: Fifo[int] = Fifo()
        self.model: deque[int] = deque()

    @rule(item=st.integers())
    def append(self, item: int) -> None:
        self.fifo.append(item)
        self.model.append(item)

    @rule(item=st.integers())
    def appendleft(self, item: int) -> None:
        self.fifo.appendleft(item)
        self.model.appendleft(item)

    @rule(count=st.integers(1, 40))
    def popleft(self, count: int) -> None:
        for _ in range(count):
            if self.model:
                assert self.fifo.popleft() == self.model.popleft()
            else:
                with pytest.raises(IndexError):
                    self.fifo.popleft()

    @rule()
    def clear(self) -> None:
        self.fifo.clear()
        self.model.clear()

    @invariant()
    def same_contents(self) -> None:
        assert list(self.fifo) == list(self.model)
        assert len(self.fifo) == len(self.model)
        assert bool(self.fifo) == bool(self.model)
        if self.model:
            assert self.fifo[0] == self.model[0]
            assert self.fifo[len(self.model) - 1] == self.model[-1]


TestFifoModel = FifoModel.TestCase


def test_fifo_index_out_of_range() -> None:
    """Indexing a Fifo past its end, or with a negative index, raises IndexError."""
    fifo: Fifo[str] = Fifo()
    fifo.append("a")
    with pytest.raises(IndexError):
        fifo[1]
    with pytest.raises(IndexError):
        fifo[-1]
