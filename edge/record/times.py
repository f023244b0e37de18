"""Times as the results database stores them: fixed-width ISO 8601 UTC text, which sorts and
compares as strings ("2025-01-31T12:00:00.000000Z")."""

from __future__ import annotations

from datetime import UTC, datetime

STORED_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def iso_utc(seconds: float) -> str:
    """Epoch seconds in the stored form."""
    return datetime.fromtimestamp(seconds, UTC).strftime(STORED_FORMAT)


def parse_time(text: str) -> str:
    """A user's ISO 8601 time (a date, or date and time; naive means UTC) in the stored form."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time (e.g. 2025-01-31 or 2025-01-31T12:00:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime(STORED_FORMAT)
