"""Exchange Online's admin API (``/adminapi/beta/{tenant}/InvokeCommand``, what ExchangeOnlineManagement v3
uses): the cmdlets the kit runs, answering as Exchange does, errors nested in ``details``.

Exchange is the authority on mailboxes: ``Get-Mailbox`` tells a user mailbox from a shared one, and an
on-premises mailbox or none at all is not found.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import cloud
from .mailboxes import KINDS
from .messages import Request, Response

if TYPE_CHECKING:
    from .tenant import SimulatedTenant

Cmdlet = Callable[[dict[str, Any]], Response]


def _error(status: int, text: str) -> Response:
    return Response(
        status,
        {
            "error": {
                "code": "BadRequest" if status == 400 else "NotFound",
                "message": "Invalid Operation",
                "details": [{"code": "Error", "message": text}],
                "innererror": {
                    "message": text,
                    "type": "Microsoft.Exchange.Management.RestApi",
                    "internalexception": {"message": text},
                },
            }
        },
    )


def _values(items: list[dict[str, Any]]) -> Response:
    return Response(200, {"@odata.context": f"{cloud.EXCHANGE}/adminapi/beta/$metadata#Collection", "value": items})


def _named(items: list[dict[str, Any]], name: Any) -> dict[str, Any] | None:
    """The policy or rule of that name; Exchange compares names case-insensitively."""
    return next((x for x in items if x["Name"].lower() == str(name or "").lower()), None)


class ExchangeAdmin:
    def __init__(self, tenant: SimulatedTenant) -> None:
        self.t = tenant
        on_mailbox = self._on_mailbox
        self.cmdlets: dict[str, Cmdlet] = {
            "Get-CASMailbox": on_mailbox(self._get_cas),
            "Set-CASMailbox": on_mailbox(self._set_cas),
            "Get-Mailbox": on_mailbox(self._get_mailbox),
            "Get-EXOMailbox": on_mailbox(self._get_mailbox),
            "Set-Mailbox": on_mailbox(self._set_mailbox),
            "Get-TransportConfig": self._get_transport,
            "Get-HostedOutboundSpamFilterPolicy": self._get_policies,
            "New-HostedOutboundSpamFilterPolicy": self._new_policy,
            "Set-HostedOutboundSpamFilterPolicy": self._set_policy,
            "Get-HostedOutboundSpamFilterRule": self._get_rules,
            "New-HostedOutboundSpamFilterRule": self._new_rule,
            "Set-HostedOutboundSpamFilterRule": self._set_rule,
            "Get-RemoteDomain": self._get_remote_domains,
            "Get-TransportRule": self._get_transport_rules,
        }

    def handle(self, request: Request) -> Response:
        claims = self.t.bearer(request.headers)
        if not claims or claims.get("aud") != cloud.EXCHANGE:
            return Response(401, {"error": {"code": "InvalidAuthenticationToken", "message": "Invalid audience."}})
        tenants = f"{re.escape(self.t.tenant_id)}|{re.escape(self.t.seed['domain'])}"
        if request.method != "POST" or not re.fullmatch(rf"/adminapi/beta/({tenants})/InvokeCommand", request.path):
            return Response(404, {"error": {"code": "NotFound", "message": "Resource not found."}})
        if not self.t.operator.get("exchange_admin", True):
            return Response(
                403, None, {"Content-Type": "application/octet-stream"}, raw=b"\x00" * 16
            )  # as Exchange does
        command = json.loads(request.body or b"{}").get("CmdletInput", {})
        cmdlet = self.cmdlets.get(command.get("CmdletName", ""))
        if cmdlet is None:
            return _error(400, f"The term '{command.get('CmdletName')}' is not recognized as a cmdlet.")
        return cmdlet(command.get("Parameters") or {})

    # --- mailboxes ----------------------------------------------------------------------------

    def _missing(self, identity: str) -> Response:
        return _error(
            404,
            f"The operation couldn't be performed because object '{identity}' couldn't be found on "
            f"'{self.t.seed['domain'].split('.')[0].upper()}P123A456.PROD.OUTLOOK.COM'.",
        )

    def _on_mailbox(self, action: Callable[[dict[str, Any], dict[str, Any]], Response]) -> Cmdlet:
        """A mailbox cmdlet: ``action(mailbox, parameters)`` when -Identity names a mailbox, else Exchange's
        not-found error."""

        def run(p: dict[str, Any]) -> Response:
            identity = str(p.get("Identity", ""))
            box = self.t.mailbox(identity)
            return action(box, p) if box else self._missing(identity)

        return run

    def _get_cas(self, box: dict[str, Any], p: dict[str, Any]) -> Response:
        return _values(
            [
                {
                    "Identity": box["userPrincipalName"],
                    "PrimarySmtpAddress": box["mail"],
                    "SmtpClientAuthenticationDisabled": box["SmtpClientAuthenticationDisabled"],
                }
            ]
        )

    def _set_cas(self, box: dict[str, Any], p: dict[str, Any]) -> Response:
        box["SmtpClientAuthenticationDisabled"] = p.get("SmtpClientAuthenticationDisabled")
        return _values([])

    def _get_mailbox(self, box: dict[str, Any], p: dict[str, Any]) -> Response:
        return _values(
            [
                {
                    "UserPrincipalName": box["userPrincipalName"],
                    "PrimarySmtpAddress": box["mail"],
                    "RecipientTypeDetails": KINDS[box["mailbox"]].recipient_type,
                    "ForwardingSmtpAddress": box["ForwardingSmtpAddress"],
                    "DeliverToMailboxAndForward": box["DeliverToMailboxAndForward"],
                }
            ]
        )

    def _set_mailbox(self, box: dict[str, Any], p: dict[str, Any]) -> Response:
        box.update({k: p[k] for k in ("ForwardingSmtpAddress", "DeliverToMailboxAndForward") if k in p})
        return _values([])

    def _get_transport(self, p: dict[str, Any]) -> Response:
        return _values(
            [
                {
                    "Identity": "Transport Settings",
                    "SmtpClientAuthenticationDisabled": self.t.transport_smtp_auth_disabled,
                }
            ]
        )

    # --- outbound spam policies and rules ------------------------------------------------------

    def _get_policies(self, p: dict[str, Any]) -> Response:
        return _values([dict(x) for x in self.t.outbound_policies])

    def _new_policy(self, p: dict[str, Any]) -> Response:
        if _named(self.t.outbound_policies, p.get("Name")):
            return _error(400, f"A policy named '{p.get('Name')}' already exists.")
        policy = {"Name": p["Name"], "IsDefault": False, "AutoForwardingMode": p.get("AutoForwardingMode", "Automatic")}
        self.t.outbound_policies.append(policy)
        return _values([dict(policy)])

    def _set_policy(self, p: dict[str, Any]) -> Response:
        policy = _named(self.t.outbound_policies, p.get("Identity"))
        if policy is None:
            return self._missing(p.get("Identity", ""))
        policy["AutoForwardingMode"] = p.get("AutoForwardingMode", policy["AutoForwardingMode"])
        return _values([])

    def _get_rules(self, p: dict[str, Any]) -> Response:
        return _values([dict(x) for x in self.t.outbound_rules])

    def _new_rule(self, p: dict[str, Any]) -> Response:
        if not any(x["Name"] == p.get("HostedOutboundSpamFilterPolicy") for x in self.t.outbound_policies):
            return self._missing(str(p.get("HostedOutboundSpamFilterPolicy")))
        rule = {
            "Name": p["Name"],
            "HostedOutboundSpamFilterPolicy": p["HostedOutboundSpamFilterPolicy"],
            "From": list(p.get("From") or []),
            "State": "Enabled",
            "Priority": len(self.t.outbound_rules),
        }
        self.t.outbound_rules.append(rule)
        return _values([dict(rule)])

    def _set_rule(self, p: dict[str, Any]) -> Response:
        rule = _named(self.t.outbound_rules, p.get("Identity"))
        if rule is None:
            return self._missing(p.get("Identity", ""))
        rule["From"] = list(p.get("From") or rule["From"])
        return _values([])

    # --- remote domains and mail flow rules (read only: the kit never changes them) --------------------

    def _get_remote_domains(self, p: dict[str, Any]) -> Response:
        if "Identity" in p:
            domain = next(
                (d for d in self.t.remote_domains if str(d["Identity"]).lower() == str(p["Identity"]).lower()), None
            )
            return _values([dict(domain)]) if domain else self._missing(str(p["Identity"]))
        return _values([dict(d) for d in self.t.remote_domains])

    def _get_transport_rules(self, p: dict[str, Any]) -> Response:
        return _values([dict(r) for r in sorted(self.t.transport_rules, key=lambda r: r.get("Priority", 0))])
