"""What each kind of mailbox looks like to Graph and to Exchange Online.

A seed says ``mailbox: cloud | shared | onprem | none | pending`` for a user (``true`` and ``false``
in older seeds mean ``cloud`` and ``none``). Graph sees licences and provisioning, never the mailbox
itself: a shared mailbox's user object looks like a user without a licence, and only Exchange's own
``Get-Mailbox`` tells the two apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Exchange Online (Plan 2)'s service plan, as it appears in a licensed user's assignedPlans
EXCHANGE_PLAN_ID = "efb87545-963c-4e0d-99df-69c6916d9eb0"


@dataclass(frozen=True)
class Kind:
    recipient_type: str | None  # RecipientTypeDetails in Exchange Online; None: Exchange Online has no such mailbox
    provisioning: str | None  # provisioningStatus of the user's exchange provisionedPlan; None: no such plan
    licensed: bool  # an assignedPlans entry for Exchange Online
    has_mail: bool  # Graph shows a mail address
    sign_in: bool  # the account may sign in (a shared mailbox's may not)
    synced: bool  # mastered on-premises (onPremisesSyncEnabled)


KINDS: dict[str, Kind] = {
    "cloud": Kind("UserMailbox", "Success", licensed=True, has_mail=True, sign_in=True, synced=False),
    "shared": Kind("SharedMailbox", None, licensed=False, has_mail=True, sign_in=False, synced=False),
    "onprem": Kind(None, None, licensed=False, has_mail=True, sign_in=True, synced=True),
    "none": Kind(None, None, licensed=False, has_mail=False, sign_in=True, synced=False),
    "pending": Kind(None, "PendingInput", licensed=True, has_mail=False, sign_in=True, synced=False),
}
LEGACY = {True: "cloud", False: "none"}


def kind_name(value: Any) -> str:
    """A seed's ``mailbox`` value as the name of its kind."""
    name = LEGACY[value] if isinstance(value, bool) else value
    if name not in KINDS:
        raise ValueError(f"mailbox: {value!r} is none of {', '.join(KINDS)}")
    return str(name)


def plans(kind: Kind, assigned: str) -> dict[str, list[dict[str, Any]]]:
    """The user's assignedPlans and provisionedPlans for Exchange Online (``assigned``: when the licence came)."""
    assigned_plans = (
        [
            {
                "assignedDateTime": assigned,
                "capabilityStatus": "Enabled",
                "service": "exchange",
                "servicePlanId": EXCHANGE_PLAN_ID,
            }
        ]
        if kind.licensed
        else []
    )
    provisioned = (
        [{"capabilityStatus": "Enabled", "provisioningStatus": kind.provisioning, "service": "exchange"}]
        if kind.provisioning
        else []
    )
    return {"assignedPlans": assigned_plans, "provisionedPlans": provisioned}
