"""The simulated tenant's SMTP submission service, as Exchange Online answers on port 587."""
from __future__ import annotations

import base64
from typing import Any

from aiosmtpd.smtp import AuthResult

from ..smtp_server import ehlo_lines
from .tenant import SimulatedTenant

SERVER = "BN9PR03CA0123.outlook.office365.com Hello [127.0.0.1]"
PLAIN = ["SIZE 157286400", "PIPELINING", "DSN", "ENHANCEDSTATUSCODES", "STARTTLS", "8BITMIME", "BINARYMIME",
         "CHUNKING", "SMTPUTF8"]
TLS = ["SIZE 157286400", "PIPELINING", "DSN", "ENHANCEDSTATUSCODES", "AUTH LOGIN XOAUTH2", "8BITMIME", "BINARYMIME",
       "CHUNKING", "SMTPUTF8"]


class SandboxSMTP:
    """aiosmtpd handler: EHLO as Exchange Online; AUTH XOAUTH2 decided by the tenant's state."""

    def __init__(self, tenant: SimulatedTenant) -> None:
        self.tenant = tenant

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        return ehlo_lines(SERVER, TLS if session.ssl else PLAIN)

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> AuthResult:
        try:
            fields = dict(part.split("=", 1) for part in base64.b64decode(args[1]).decode().split("\x01") if "=" in part)
            user, token = fields["user"], fields["auth"].removeprefix("Bearer ")
        except (IndexError, ValueError, KeyError):
            return AuthResult(success=False, handled=False, message="501 5.5.2 Cannot decode response")
        code, text = self.tenant.smtp_authenticate(user, token)
        return AuthResult(success=code == 235, handled=False, message=f"{code} {text}")
