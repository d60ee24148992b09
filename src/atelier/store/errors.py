"""Typed errors of the store layer, with messages fit to show to an operator or a user."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of the store's refusals."""


class InvalidKeyError(StoreError, ValueError):
    """A blob key that is not one this product generates (or one that would escape the store)."""


class BlobNotFoundError(StoreError, KeyError):
    """No blob under that key."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        return f"no blob under the key {self.key!r}"


class PolicyError(StoreError):
    """An upload that breaks its signed policy (expired, too big, wrong type, forged)."""


class StorageUnavailableError(StoreError):
    """The blob store cannot be reached (refused, timed out, or answering 5xx after retries).
    Nothing was stored; the same call may succeed later."""


class StorageFullError(StorageUnavailableError):
    """The blob store has no room (the disk is full, a quota is reached, or less than the free
    space it keeps is left). Nothing was stored; an outage like an unreachable store: the same
    call succeeds once there is room."""


class DatabaseDamagedError(StoreError):
    """The SQLite file is damaged (not a database, or pages that cannot be read). The message is
    the one line the operator needs: which file, and to restore it from a backup."""


class StorageConfigError(StoreError):
    """ATELIER_STORAGE_URL (or a setting that goes with it) is not usable."""


class LeaseLostError(StoreError):
    """This worker no longer holds the job: its lease ran out and another worker took it, or the
    job was cancelled. Stop working on it; whatever it would write now is refused."""
