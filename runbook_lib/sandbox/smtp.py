"""The simulated tenant's SMTP submission service, as Exchange Online answers on port 587."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import AuthResult

from ..wire.smtp_server import ehlo_lines
from . import cloud

if TYPE_CHECKING:
    from .tenant import SimulatedTenant

SERVER = "BN9PR03CA0123.outlook.office365.com Hello [127.0.0.1]"
SUFFIX = "[BN9PR03CA0123.namprd03.prod.outlook.com]"
PLAIN = [
    "SIZE 157286400",
    "PIPELINING",
    "DSN",
    "ENHANCEDSTATUSCODES",
    "STARTTLS",
    "8BITMIME",
    "BINARYMIME",
    "CHUNKING",
    "SMTPUTF8",
]
TLS = [
    "SIZE 157286400",
    "PIPELINING",
    "DSN",
    "ENHANCEDSTATUSCODES",
    "AUTH LOGIN XOAUTH2",
    "8BITMIME",
    "BINARYMIME",
    "CHUNKING",
    "SMTPUTF8",
]


def xoauth2(tenant: SimulatedTenant, user: str, token: str) -> tuple[int, str]:
    """What Exchange Online answers to AUTH XOAUTH2 for this user and token: a delegated SMTP.Send token
    of that very user, and SMTP AUTH allowed for the mailbox (its own setting, else the tenant's)."""
    claims = tenant.verify(token)
    if (
        not claims
        or claims.get("aud") != cloud.SMTP
        or "SMTP.Send" not in str(claims.get("scp", "")).split()
        or str(claims.get("upn", "")).lower() != user.lower()
    ):
        return 535, f"5.7.3 Authentication unsuccessful {SUFFIX}"
    if tenant.seed.get("security_defaults"):
        return 535, (
            "5.7.139 Authentication unsuccessful, user is locked by your organization's security "
            f"defaults policy. Contact your administrator. {SUFFIX}"
        )
    box = tenant.mailbox(user)
    disabled = None if box is None else box["SmtpClientAuthenticationDisabled"]
    if disabled is True or (disabled is None and tenant.transport_smtp_auth_disabled):
        scope = "Mailbox" if disabled is True else "Tenant"
        return 535, (
            f"5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the {scope}. "
            f"Visit https://aka.ms/smtp_auth_disabled for more information. {SUFFIX}"
        )
    return 235, "2.7.0 Authentication successful"


class SandboxSMTP:
    """aiosmtpd handler: EHLO as Exchange Online; AUTH XOAUTH2 decided by the tenant's state."""

    def __init__(self, tenant: SimulatedTenant) -> None:
        self.tenant = tenant

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return ehlo_lines(SERVER, TLS if session.ssl else PLAIN)

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> AuthResult:
        try:
            fields = dict(
                part.split("=", 1) for part in base64.b64decode(args[1]).decode().split("\x01") if "=" in part
            )
            user, token = fields["user"], fields["auth"].removeprefix("Bearer ")
        except (IndexError, ValueError, KeyError):
            return AuthResult(success=False, handled=False, message="501 5.5.2 Cannot decode response")
        code, text = xoauth2(self.tenant, user, token)
        return AuthResult(success=code == 235, handled=False, message=f"{code} {text}", auth_data=user)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Exchange accepts a message only from the authenticated mailbox (no Send As here)."""
        if not session.authenticated:
            return f"530 5.7.57 Client not authenticated to send mail. {SUFFIX}"
        if str(envelope.mail_from).lower() != str(session.auth_data).lower():
            return (
                f"554 5.2.252 SendAsDenied; {session.auth_data} not allowed to send as {envelope.mail_from}; "
                f"STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied {SUFFIX}"
            )
        subject = next(
            (
                line[9:]
                for line in envelope.content.decode("utf-8", "replace").splitlines()
                if line.startswith("Subject: ")
            ),
            "",
        )
        self.tenant.sent.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos), "subject": subject})
        return f"250 2.0.0 OK <{self.tenant.new_id()}@{SERVER.split()[0]}> [Hostname={SERVER.split()[0]}]"
