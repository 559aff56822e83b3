"""Domain errors of the mock server: an error *kind* and the request *field* it concerns, no HTTP status.

The state layer and the engine raise these; only the protocol layer (:mod:`cookbook.mock.protocol`) maps a
kind to an HTTP status and encodes the reply. ``str(error)`` reads ``"<field>: <message>"`` so a log line
or a Python traceback still says what, where and what to do.
"""

from __future__ import annotations

from enum import Enum

from cookbook.errors import ConfigurationError, CookbookError, DataError, LossInputError


class Kind(Enum):
    """What went wrong, independent of the transport."""

    INVALID = "invalid"  # a value is malformed or out of range
    NOT_FOUND = "not_found"  # an id, checkpoint or model does not exist
    CONFLICT = "conflict"  # an id was already used by a different request, or a checkpoint exists
    UNSUPPORTED = "unsupported"  # a Tinker feature the mock does not implement
    TOO_LARGE = "too_large"  # a body or decompressed body over the limit
    MEDIA_TYPE = "media_type"  # wrong Content-Type / Content-Encoding
    GONE = "gone"  # the session ended


class MockError(CookbookError, ValueError):
    """A refused request: ``kind``, the offending ``field`` (a dotted request path, or None) and a message."""

    def __init__(self, field: str | None, message: str, kind: Kind = Kind.INVALID) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message
        self.kind = kind


class InvalidData(MockError, DataError):
    """Malformed request data (shapes, dtypes, token ranges, NaN/inf)."""


class InvalidConfig(MockError, ConfigurationError):
    """An unknown or out-of-range setting (loss name, config key, rank, hyperparameter)."""


class InvalidLossInput(MockError, LossInputError):
    """Loss inputs that are missing or inconsistent."""


def not_found(field: str | None, message: str) -> MockError:
    return MockError(field, message, Kind.NOT_FOUND)


def conflict(field: str | None, message: str) -> MockError:
    return MockError(field, message, Kind.CONFLICT)


def unsupported(field: str | None, message: str) -> MockError:
    return MockError(field, message, Kind.UNSUPPORTED)


def as_mock_error(exc: CookbookError) -> MockError:
    """A :class:`MockError` for any cookbook error (one without a field keeps ``field=None``)."""
    return exc if isinstance(exc, MockError) else MockError(None, str(exc))
