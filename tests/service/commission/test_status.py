"""An artwork's statuses: one enum stored as plain strings, moves only where the table allows."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from atelier.service.commission.status import TRANSITIONS, ArtworkStatus, Event, move, next_status


def test_statuses_are_the_plain_strings_rows_json_and_pages_use() -> None:
    assert ArtworkStatus.PREVIEW_READY == "preview_ready"
    assert json.dumps({"status": ArtworkStatus.HD_PAINTING}) == '{"status": "hd_painting"}'
    assert "paid" in ArtworkStatus.SOLD and "preview_ready" not in ArtworkStatus.SOLD
    assert ArtworkStatus.SOLD <= ArtworkStatus.FINAL
    assert {s.value for s in ArtworkStatus} == {
        "queued", "painting", "preview_ready", "failed", "paid", "hd_painting", "delivered",
    }


def test_the_whole_lifecycle_is_a_walk_through_the_table() -> None:
    artwork = SimpleNamespace(status=ArtworkStatus.QUEUED)
    walk = [
        (Event.PREVIEW_STARTED, "painting"),
        (Event.PREVIEW_STOPPED, "queued"),  # a worker stopped: back in the queue
        (Event.PREVIEW_STARTED, "painting"),
        (Event.PREVIEW_DONE, "preview_ready"),
        (Event.PAID, "paid"),
        (Event.HD_STARTED, "hd_painting"),
        (Event.HD_STOPPED, "paid"),
        (Event.HD_STARTED, "hd_painting"),
        (Event.HD_DONE, "delivered"),
    ]
    for event, after in walk:
        assert move(artwork, event), event
        assert artwork.status == after


@pytest.mark.parametrize(
    ("status", "event"),
    [
        ("paid", Event.PREVIEW_STARTED),  # a sold artwork's preview remade keeps the sale's status
        ("delivered", Event.PREVIEW_DONE),
        ("preview_ready", Event.PREVIEW_FAILED),  # a late failure does not undo a preview
        ("paid", Event.PREVIEW_FAILED),
        ("queued", Event.PAID),  # nothing to pay for yet
        ("delivered", Event.PAID),  # paid twice: recorded as a sale, nothing moves
        ("preview_ready", Event.HD_STARTED),  # never painted in HD before payment
        ("ordered", Event.PREVIEW_STARTED),  # not a status at all
    ],
)
def test_a_move_the_table_does_not_allow_changes_nothing(status: str, event: Event) -> None:
    artwork = SimpleNamespace(status=status)
    assert next_status(status, event) is None
    assert move(artwork, event) is False
    assert artwork.status == status


def test_every_event_has_a_row_and_every_row_names_statuses() -> None:
    assert set(TRANSITIONS) == set(Event)
    for moves in TRANSITIONS.values():
        assert all(isinstance(a, ArtworkStatus) and isinstance(b, ArtworkStatus) for a, b in moves.items())
