"""Exchange Online's admin API (the REST endpoint ExchangeOnlineManagement v3 uses): one cmdlet per request, read
or written, and its errors dug out into a message a person can act on. Steps 3, 9 and RBAC for Applications
(:mod:`runbook_lib.tenant.exchange`, :mod:`runbook_lib.steps.teardown`, :mod:`runbook_lib.tenant.rbac`) all go through
it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..config import registry
from ..engine.changes import Write
from ..errors import GraphError, StepFailed

if TYPE_CHECKING:
    from ..context.step import Step

STEP = registry.MAILBOX
EXCHANGE_ADMIN_NEEDS = (
    "an Exchange Administrator (or Global Administrator) role; for automation the application "
    "needs Exchange.ManageAsApp and the Exchange Administrator role; or use mailbox.apply_with: "
    "powershell"
)


def cmdlet_body(cmdlet: str, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"CmdletInput": {"CmdletName": cmdlet, "Parameters": parameters or {}}}


def admin_error(cmdlet: str, error: GraphError) -> StepFailed:
    """The admin API hides its real message: dig it out of ``details`` or ``innererror``."""
    if error.status in (401, 403):
        return StepFailed(
            f"Exchange Online refused {cmdlet} (HTTP {error.status})",
            fix=f"sign in with {EXCHANGE_ADMIN_NEEDS}",
            step=STEP,
        )
    inner = error.body.get("error", {})
    details = inner.get("details") or [{}]
    nested = (
        details[0].get("message")
        or ((inner.get("innererror") or {}).get("internalexception") or {}).get("message")
        or inner.get("message", "")
    )
    return StepFailed(
        f"{cmdlet} failed: {nested} (request-id {error.request_id or 'none'})",
        fix="check the mailbox and policy names; run the generated PowerShell script to see Exchange's full answer",
        step=STEP,
    )


def invoke(
    step: Step, cmdlet: str, parameters: dict[str, Any] | None = None, *, missing: StepFailed | None = None
) -> list[dict[str, Any]]:
    """Run one read-only cmdlet (Get-*) through the admin API: a read, retried like any read. ``missing`` is
    the error to give when Exchange answers that the object does not exist (rather than refusing)."""
    try:
        answer = step.exchange.request("POST", "/InvokeCommand", body=cmdlet_body(cmdlet, parameters), idempotent=True)
    except GraphError as error:
        if missing is not None and error.status not in (401, 403):
            raise missing from error
        raise admin_error(cmdlet, error) from error
    return list((answer or {}).get("value", []))


def cmdlet_write(cmdlet: str, parameters: dict[str, Any]) -> Write:
    """A cmdlet that changes something: Set-* are idempotent (the same values again), New-* are not."""
    return Write(
        "exchange",
        "POST",
        "/InvokeCommand",
        cmdlet_body(cmdlet, parameters),
        idempotent=cmdlet.startswith("Set-"),
        needs=EXCHANGE_ADMIN_NEEDS,
    )
