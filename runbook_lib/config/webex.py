"""Webex Connect values: the step 1 fields the operator copies from the Webex Connect UI.

The kit never invents these values; it checks their shape so that a typo is caught before it
becomes a redirect-URI mismatch (AADSTS50011) or mail forwarded into the void.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import pandas as pd

EMAIL_RE = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)
FORWARDING_RE = re.compile(r"^[0-9a-f]{32}@mail-[a-z0-9]+\.imiconnect\.io$", re.IGNORECASE)
CALLBACK_DOMAINS = (".webexconnect.io", ".imiconnect.io")

#: field -> the expected form, in the words shown to the operator
EXPECTED = {
    "asset_name": "a non-empty name of at most 100 characters",
    "email_id": "the mailbox's email address (its user principal name), e.g. support@contoso.com",
    "forwarding_address": "32 hexadecimal characters @ mail-<region>.imiconnect.io, copied from Webex Connect",
    "callback_url": "https://<tenant>.<region>.webexconnect.io/callback (or a legacy "
    "https://<pod>.imiconnect.io/callback), copied from Webex Connect",
}


@dataclass(frozen=True)
class FieldCheck:
    field: str
    value: str
    ok: bool
    expected: str


def _callback_ok(url: str) -> bool:
    parts = urlsplit(url)
    host = parts.hostname or ""
    return (
        parts.scheme == "https"
        and host.endswith(CALLBACK_DOMAINS)
        and parts.path == "/callback"
        and not parts.query
        and not parts.fragment
        and parts.port is None
    )


RULES = {
    "asset_name": lambda v: 0 < len(v.strip()) <= 100,
    "email_id": lambda v: bool(EMAIL_RE.match(v)),
    "forwarding_address": lambda v: bool(FORWARDING_RE.match(v)),
    "callback_url": _callback_ok,
}


def problem(field: str, value: str) -> str | None:
    """Why ``value`` is not a valid ``field``, or None when it is."""
    return None if RULES[field](value) else f"{value!r} is not {EXPECTED[field]}"


def check_values(values: dict[str, str]) -> list[FieldCheck]:
    """One row per Webex Connect field: the value, whether it is well formed, the expected form."""
    return [FieldCheck(f, values[f], RULES[f](values[f]), EXPECTED[f]) for f in RULES]


#: where each step 1 value is used later: (field, used as, step)
CARRIED_FORWARD = [
    ("callback_url", "Web redirect URI of the Entra ID application", "02_azure_app_registration"),
    ("email_id", "the mailbox: SMTP AUTH and forwarding are set on it", "03_office365_mailbox"),
    ("forwarding_address", "the mailbox forwards every message here", "03_office365_mailbox"),
    (
        "email_id",
        "Username in the Webex Connect form; the account that signs in at Generate Token",
        "04_webex_connect_email_app",
    ),
    ("asset_name", "Asset Name in the Webex Connect form", "04_webex_connect_email_app"),
]


def values_table(values: Any) -> pd.DataFrame:
    """The step 1 values with their checks, as a table."""
    import pandas as pd

    rows = check_values(values.model_dump() if hasattr(values, "model_dump") else dict(values))
    return pd.DataFrame(
        [{"field": r.field, "value": r.value, "well formed": r.ok, "expected form": r.expected} for r in rows]
    )


def carried_forward(values: Any) -> pd.DataFrame:
    """Where each value is typed or applied in the later steps."""
    import pandas as pd

    data = values.model_dump() if hasattr(values, "model_dump") else dict(values)
    return pd.DataFrame([{"value": data[f], "used as": use, "in": step} for f, use, step in CARRIED_FORWARD])


#: step 4's actions in Webex Connect, confirmed by check boxes (JupyterLab) or ``checklist.done`` (headless)
CHECKLIST = {
    "values_entered": "Every field of the table above typed into the Webex Connect form",
    "generate_token": "Generate Token: signed in as the mailbox account itself and accepted the consent prompt",
    "tokens_filled": "Access Token, Refresh Token and Validity filled in by themselves",
    "saved": "Save pressed",
    "registered": "Register To Webex Engage done, with the right service (it cannot be changed later)",
}
