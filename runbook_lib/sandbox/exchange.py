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
            "Remove-HostedOutboundSpamFilterPolicy": self._remove_policy,
            "Remove-HostedOutboundSpamFilterRule": self._remove_rule,
            "Get-RemoteDomain": self._get_remote_domains,
            "Get-TransportRule": self._get_transport_rules,
            # RBAC for Applications: service principal pointers, management scopes, role assignments
            "Get-ServicePrincipal": self._get_pointers,
            "New-ServicePrincipal": self._new_pointer,
            "Remove-ServicePrincipal": self._remove_pointer,
            "Get-ManagementScope": self._get_scopes,
            "New-ManagementScope": self._new_scope,
            "Set-ManagementScope": self._set_scope,
            "Remove-ManagementScope": self._remove_scope,
            "Get-ManagementRoleAssignment": self._get_role_assignments,
            "New-ManagementRoleAssignment": self._new_role_assignment,
            "Remove-ManagementRoleAssignment": self._remove_role_assignment,
            "Test-ServicePrincipalAuthorization": self._test_authorization,
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

    def _remove_policy(self, p: dict[str, Any]) -> Response:
        """As Exchange documents it: the default policy cannot be removed, and the rules of a removed policy
        stay (by design: they are removed with Remove-HostedOutboundSpamFilterRule)."""
        policy = _named(self.t.outbound_policies, p.get("Identity"))
        if policy is None:
            return self._missing(str(p.get("Identity", "")))
        if policy["IsDefault"]:
            return _error(400, "The default policy can't be removed.")
        self.t.outbound_policies.remove(policy)
        return _values([])

    def _remove_rule(self, p: dict[str, Any]) -> Response:
        rule = _named(self.t.outbound_rules, p.get("Identity"))
        if rule is None:
            return self._missing(str(p.get("Identity", "")))
        self.t.outbound_rules.remove(rule)
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

    # --- RBAC for Applications (Exchange's own grants to an application, limited to a scope) ------------

    def _pointer(self, identity: Any) -> dict[str, Any] | None:
        """A service principal pointer by any of its identities (ServicePrincipalIdParameter)."""
        key = str(identity or "").lower()
        fields = ("Identity", "AppId", "ObjectId", "DisplayName")
        return next((x for x in self.t.exchange_service_principals if key in (str(x[f]).lower() for f in fields)), None)

    def _get_pointers(self, p: dict[str, Any]) -> Response:
        if "Identity" not in p:
            return _values([dict(x) for x in self.t.exchange_service_principals])
        pointer = self._pointer(p["Identity"])
        return _values([dict(pointer)]) if pointer else self._missing(str(p["Identity"]))

    def _new_pointer(self, p: dict[str, Any]) -> Response:
        """A reference to an Entra ID service principal; one per application."""
        missing = [name for name in ("AppId", "ObjectId") if not p.get(name)]
        if missing:
            return _error(
                400, f"Cannot process command because of one or more missing mandatory parameters: {' '.join(missing)}."
            )
        if any(str(x["AppId"]).lower() == str(p["AppId"]).lower() for x in self.t.exchange_service_principals):
            return _error(400, f"A service principal with AppId {p['AppId']} already exists.")
        object_id = str(p["ObjectId"])
        pointer = {
            "Identity": object_id,
            "Name": object_id,
            "DisplayName": p.get("DisplayName") or object_id,
            "AppId": str(p["AppId"]),
            "ObjectId": object_id,
            "ServiceId": object_id,
        }
        self.t.exchange_service_principals.append(pointer)
        return _values([dict(pointer)])

    def _remove_pointer(self, p: dict[str, Any]) -> Response:
        pointer = self._pointer(p.get("Identity"))
        if pointer is None:
            return self._missing(str(p.get("Identity", "")))
        self.t.exchange_service_principals.remove(pointer)
        return _values([])

    def _get_scopes(self, p: dict[str, Any]) -> Response:
        if "Identity" not in p:
            return _values([dict(x) for x in self.t.management_scopes])
        scope = _named(self.t.management_scopes, p["Identity"])
        return _values([dict(scope)]) if scope else self._missing(str(p["Identity"]))

    def _new_scope(self, p: dict[str, Any]) -> Response:
        if _named(self.t.management_scopes, p.get("Name")):
            return _error(400, f"The management scope '{p.get('Name')}' already exists.")
        refused = _unfilterable(p.get("RecipientRestrictionFilter"))
        if refused:
            return refused
        scope = {
            "Name": p["Name"],
            "Identity": p["Name"],
            "RecipientFilter": p["RecipientRestrictionFilter"],
            "RecipientRoot": None,
            "ScopeRestrictionType": "RecipientScope",
            "Exclusive": False,
        }
        self.t.management_scopes.append(scope)
        return _values([dict(scope)])

    def _set_scope(self, p: dict[str, Any]) -> Response:
        scope = _named(self.t.management_scopes, p.get("Identity"))
        if scope is None:
            return self._missing(str(p.get("Identity", "")))
        refused = _unfilterable(p.get("RecipientRestrictionFilter"))
        if refused:
            return refused
        scope["RecipientFilter"] = p["RecipientRestrictionFilter"]
        return _values([])

    def _remove_scope(self, p: dict[str, Any]) -> Response:
        """As Exchange documents it: a scope a role assignment uses cannot be removed."""
        scope = _named(self.t.management_scopes, p.get("Identity"))
        if scope is None:
            return self._missing(str(p.get("Identity", "")))
        users = [a["Name"] for a in self.t.management_role_assignments if a["CustomResourceScope"] == scope["Name"]]
        if users:
            return _error(
                400,
                f"The management scope '{scope['Name']}' can't be removed because it's associated with the management "
                f"role assignment(s) {', '.join(users)}.",
            )
        self.t.management_scopes.remove(scope)
        return _values([])

    def _get_role_assignments(self, p: dict[str, Any]) -> Response:
        if "Identity" not in p:
            return _values([dict(x) for x in self.t.management_role_assignments])
        assignment = _named(self.t.management_role_assignments, p["Identity"])
        return _values([dict(assignment)]) if assignment else self._missing(str(p["Identity"]))

    def _new_role_assignment(self, p: dict[str, Any]) -> Response:
        """An application role assigned to a service principal pointer, limited to a custom resource scope."""
        name = str(p.get("Name") or f"{p.get('Role')}-{p.get('App')}")
        if len(name) > NAME_LIMIT:
            return _error(
                400,
                f"The length of the property is too long. The maximum length is {NAME_LIMIT} and the length of the "
                f"value provided is {len(name)}.",
            )
        if _named(self.t.management_role_assignments, name):
            return _error(400, f"The role assignment '{name}' already exists.")
        role = str(p.get("Role", ""))
        if role.lower() not in {r.lower() for r in APPLICATION_ROLES}:
            return (
                _error(400, "If you use the App parameter, you can only specify application roles.")
                if role
                else _error(400, "Cannot process command because of one or more missing mandatory parameters: Role.")
            )
        pointer = self._pointer(p.get("App"))
        if pointer is None:
            return self._missing(str(p.get("App", "")))
        scope = _named(self.t.management_scopes, p["CustomResourceScope"]) if p.get("CustomResourceScope") else None
        if p.get("CustomResourceScope") and scope is None:
            return self._missing(str(p["CustomResourceScope"]))
        assignment = {
            "Name": name,
            "Identity": name,
            "Role": next(r for r in APPLICATION_ROLES if r.lower() == role.lower()),
            "RoleAssignee": pointer["Identity"],
            "RoleAssigneeName": pointer["DisplayName"],
            "RoleAssigneeType": "ServicePrincipal",
            "CustomResourceScope": scope["Name"] if scope else None,
            "RecipientWriteScope": "CustomRecipientScope" if scope else "Organization",
            "RoleAssignmentDelegationType": "Regular",
            "Enabled": True,
        }
        self.t.management_role_assignments.append(assignment)
        return _values([dict(assignment)])

    def _remove_role_assignment(self, p: dict[str, Any]) -> Response:
        assignment = _named(self.t.management_role_assignments, p.get("Identity"))
        if assignment is None:
            return self._missing(str(p.get("Identity", "")))
        self.t.management_role_assignments.remove(assignment)
        return _values([])

    def _test_authorization(self, p: dict[str, Any]) -> Response:
        """Each application role the pointer holds in Exchange, and (with -Resource) whether the mailbox is in
        its scope. Entra ID's grants (tenant-wide consent) are not part of it, as Microsoft documents."""
        pointer = self._pointer(p.get("Identity"))
        if pointer is None:
            return self._missing(str(p.get("Identity", "")))
        box = self.t.mailbox(str(p["Resource"])) if p.get("Resource") else None
        if p.get("Resource") and box is None:
            return self._missing(str(p["Resource"]))
        rows = []
        for assignment in self.t.management_role_assignments:
            if assignment["RoleAssignee"] != pointer["Identity"]:
                continue
            scope = _named(self.t.management_scopes, assignment["CustomResourceScope"])
            rows.append(
                {
                    "RoleName": assignment["Role"],
                    "GrantedPermissions": assignment["Role"].removeprefix("Application "),
                    "AllowedResourceScope": scope["Name"] if scope else "Organization",
                    "ScopeType": "CustomRecipientScope" if scope else "Organization",
                    "InScope": "Not Run" if box is None else (scope is None or _matches(scope["RecipientFilter"], box)),
                }
            )
        return _values(rows)


#: the application roles of RBAC for Applications (Microsoft's list); with -App no other role is accepted
APPLICATION_ROLES = (
    "Application Mail.Read",
    "Application Mail.ReadBasic",
    "Application Mail.ReadWrite",
    "Application Mail.Send",
    "Application MailboxSettings.Read",
    "Application MailboxSettings.ReadWrite",
    "Application Calendars.Read",
    "Application Calendars.ReadWrite",
    "Application Contacts.Read",
    "Application Contacts.ReadWrite",
    "Application Mail Full Access",
    "Application Exchange Full Access",
    "Application EWS.AccessAsApp",
)
#: Exchange's longest role assignment name
NAME_LIMIT = 64
#: the recipient filters the simulated tenant evaluates: one property compared with one quoted value
FILTER = re.compile(
    r"^\s*(PrimarySmtpAddress|UserPrincipalName|WindowsEmailAddress)\s+-eq\s+'((?:[^']|'')*)'\s*$", re.IGNORECASE
)


def _unfilterable(text: Any) -> Response | None:
    """Exchange's refusal of a recipient filter the simulated tenant cannot evaluate (or none at all)."""
    if text and FILTER.match(str(text)):
        return None
    return _error(
        400, f'Invalid filter syntax. For a description of the filter parameter syntax see the command help. "{text}"'
    )


def _matches(text: str, box: dict[str, Any]) -> bool:
    match = FILTER.match(text)
    if match is None:
        return False
    prop, value = match.group(1).lower(), match.group(2).replace("''", "'").lower()
    have = box["userPrincipalName"] if prop == "userprincipalname" else box["mail"]
    return str(have or "").lower() == value
