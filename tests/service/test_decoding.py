"""The decoding budget (service/decoding.py): decodes take their estimated memory out of one
budget per process, wait a little for room, and are refused when none comes."""

from __future__ import annotations

import threading

import pytest

from atelier.service.decoding import DecodeBudget, DecodeBusyError


def test_decodes_take_turns_within_the_budget_and_a_late_one_is_refused() -> None:
    budget = DecodeBudget(100, wait_seconds=0)
    with budget.reserve(60):
        with budget.reserve(40):  # fits beside it
            assert budget.in_use == 100
        with pytest.raises(DecodeBusyError):
            with budget.reserve(41):
                pass
    assert budget.in_use == 0 and budget.refused == 1
    with budget.reserve(1000):  # bigger than the budget, alone: decoded
        assert budget.in_use == 1000


def test_a_waiting_decode_gets_the_room_when_it_is_given_back() -> None:
    budget = DecodeBudget(100, wait_seconds=60)
    held = threading.Event()
    done = threading.Event()

    def other() -> None:
        with budget.reserve(80):
            held.set()
            done.wait(60)

    thread = threading.Thread(target=other)
    thread.start()
    held.wait(60)
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(_reserve_and_report(budget, 50)))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive() and not got  # waiting for room, not refused
    done.set()
    waiter.join(60)
    thread.join(60)
    assert got == [50]  # it ran once the 80 were given back, alone
    assert budget.peak_in_use == 80
    assert budget.in_use == 0


def _reserve_and_report(budget: DecodeBudget, cost: int) -> int:
    with budget.reserve(cost):
        return budget.in_use
