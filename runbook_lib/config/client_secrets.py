"""The application's client secrets as typed objects, and the one rule that matches the stored value to one.

Entra ID never shows a secret's value again after ``addPassword``; it shows the first three characters (the
*hint*), the Secret ID (``keyId``, a GUID) and the expiry. So the secret store's value is matched to the
application's secrets by hint, and a value that *is* one of the Secret IDs is the classic paste mistake.
A value that matches nothing was removed, rotated away, or belongs to another application: only a new
secret (step 2) fixes that.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import pandas as pd

from .params import GUID_RE

State = Literal["valid", "expiring soon", "expired"]
#: how the stored value relates to the application's secrets
Match = Literal["matched", "empty", "secret id", "no match"]


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True)
class AppSecret:
    """One of the application's client secrets, as Graph describes it (never its value)."""

    key_id: str
    hint: str
    description: str
    expires: datetime
    starts: datetime | None

    def state(self, now: datetime, renew_days: int) -> State:
        if self.expires <= now:
            return "expired"
        return "expiring soon" if self.expires <= now + timedelta(days=renew_days) else "valid"

    def days_left(self, now: datetime) -> int:
        return (self.expires.date() - now.date()).days

    def is_new(self, now: datetime, within: float) -> bool:
        """Added so recently that Entra ID may still be replicating it."""
        return self.starts is not None and (now - self.starts).total_seconds() < within


def app_secrets(app: dict[str, Any] | None) -> list[AppSecret]:
    """The application's secrets, in Graph's order."""
    return [
        AppSecret(
            c["keyId"],
            c.get("hint") or "",
            c.get("displayName") or "",
            parse_time(c["endDateTime"]),
            parse_time(c["startDateTime"]) if c.get("startDateTime") else None,
        )
        for c in (app or {}).get("passwordCredentials") or []
    ]


@dataclass(frozen=True)
class StoredMatch:
    """What the secret store's value is, among the application's secrets."""

    kind: Match
    secret: AppSecret | None = None

    def explain(self, store: str) -> str:
        return {
            "matched": f"the store {store} holds the secret with hint {self.secret.hint if self.secret else ''}...",
            "empty": f"the store {store} is empty",
            "secret id": f"the store {store} holds a Secret ID (keyId) of the application instead of a secret's Value",
            "no match": f"the value in the store {store} matches none of the application's secrets: it was removed "
            "or rotated away, or it belongs to another application",
        }[self.kind]


def match_stored(value: str | None, secrets: list[AppSecret], now: datetime) -> StoredMatch:
    """Which of ``secrets`` the stored ``value`` is: the one with its hint that lasts longest."""
    if not value:
        return StoredMatch("empty")
    if GUID_RE.match(value.strip()) and any(s.key_id.lower() == value.strip().lower() for s in secrets):
        return StoredMatch("secret id")
    same_hint = sorted((s for s in secrets if s.hint and value.startswith(s.hint)), key=lambda s: s.expires)
    return StoredMatch("matched", same_hint[-1]) if same_hint else StoredMatch("no match")


def table(secrets: list[AppSecret], now: datetime, renew_days: int) -> pd.DataFrame:
    """The secrets by hint and expiry, with their state: for people to read."""
    rows = [
        {
            "hint": s.hint,
            "description": s.description,
            "expires": s.expires.date().isoformat(),
            "state": s.state(now, renew_days),
            "keyId": s.key_id,
        }
        for s in secrets
    ]
    return pd.DataFrame(rows, columns=["hint", "description", "expires", "state", "keyId"])
