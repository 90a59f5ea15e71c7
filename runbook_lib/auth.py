"""Signing the operator in with msal, and turning msal's error dicts into typed errors.

* People sign in by device code with the "Microsoft Graph Command Line Tools" public client,
  asking for exactly the delegated Graph scopes the steps need.
* Automation signs in with client credentials whose secret comes from a secret store reference.

In live mode the token cache is shared by the notebooks of one run (a file under
``.runbook/cache/``, mode 0600, outside the archive); ``runbook run`` clears it before and after a
run so no token outlives it. Recorded and replayed steps keep tokens in memory (see
:attr:`Transport.token_cache`).
msal gets the transport's session as its HTTP client, so its calls are replayed and recorded too.
"""
from __future__ import annotations

import base64
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import msal

from . import knowledge, paths, secrets
from .endpoints import Endpoints
from .errors import AuthError, RunbookError
from .params import Params
from .transport import Transport

#: Delegated Graph scopes the operator consents to, with why each is needed (README lists them).
OPERATOR_SCOPES = {
    "Application.ReadWrite.All": "find, create and update the application; add its secret; create its service principal",
    "AppRoleAssignment.ReadWrite.All": "grant admin consent for Exchange Online Mail.Send",
    "DelegatedPermissionGrant.ReadWrite.All": "grant tenant-wide consent for SMTP.Send (consent: admin)",
    "Policy.Read.All": "read whether users may consent to applications",
    "User.Read.All": "check the mailbox user exists and is enabled",
    "MailboxSettings.Read": "check the user has an Exchange Online mailbox",
}
PENDING = {"authorization_pending", "slow_down"}
#: the public client Exchange Online PowerShell signs in with; preauthorized for Exchange's admin API
EXCHANGE_POWERSHELL_CLIENT_ID = "fb78d390-0c51-40cd-8e17-fdbfab77341b"


def clear_cache(params: Params) -> None:
    """Forget the tenant's tokens: called at the start and end of every run."""
    paths.token_cache(params.tenant).unlink(missing_ok=True)


def auth_error(result: dict[str, Any]) -> AuthError:
    """msal returns errors as dicts; this names the AADSTS code and the step that fixes it."""
    codes = [int(c) for c in result.get("error_codes") or []]
    entry = next((knowledge.lookup("aadsts", c) for c in codes if knowledge.lookup("aadsts", c)), None)
    return AuthError(result.get("error", "unknown_error"), codes, result.get("error_description", ""),
                     fix=entry.fix if entry else "", step=entry.notebook if entry else "")


def claims(token: str) -> dict[str, Any]:
    """A JWT's claims, unverified: to read scp/roles/aud, never to trust identity."""
    try:
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}


class _Cache(msal.SerializableTokenCache):
    def __init__(self, path: Path | None) -> None:
        super().__init__()
        self.path = path
        if path and path.exists():
            self.deserialize(path.read_text(encoding="utf-8"))

    def save(self) -> None:
        if self.path is None or not self.has_state_changed:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(self.serialize())


class OperatorSignIn:
    """Gets the operator's tokens for one resource, ``graph`` or ``exchange`` (Exchange Online's admin API);
    ``show`` receives the device-code instructions."""

    def __init__(self, params: Params, endpoints: Endpoints, transport: Transport,
                 show: Callable[[str], None] = print, resource: str = "graph") -> None:
        self.params = params
        self.endpoints = endpoints
        self.transport = transport
        self.show = show
        self.cache = _Cache(transport.token_cache)
        self._token: str | None = None
        options = dict(authority=endpoints.authority, http_client=transport.session, token_cache=self.cache,
                       instance_discovery=False)
        operator = params.operator
        if operator.sign_in == "device_code":
            client_id = operator.client_id
            if resource == "graph":
                self.scopes = [endpoints.graph_scope(s) for s in OPERATOR_SCOPES]
            elif resource == "smtp":          # the mailbox account itself signs in, as at Generate Token
                self.scopes = [endpoints.smtp_scope]
            else:
                self.scopes = [endpoints.exchange_scope]
                client_id = EXCHANGE_POWERSHELL_CLIENT_ID
            self.app: msal.ClientApplication = msal.PublicClientApplication(client_id, **options)
        elif resource == "smtp":
            raise RunbookError("the SMTP sign-in test needs a person signing in as the mailbox",
                               fix="set verify.mailbox_sign_in: false for automation runs")
        else:
            secret = secrets.read(operator.secret) if operator.secret else None
            if not secret:
                raise RunbookError(f"the operator secret ({operator.secret.describe() if operator.secret else 'none'}) is empty",
                                   fix="put the automation application's secret in the store the parameters name")
            self.scopes = [endpoints.graph_scope(".default") if resource == "graph" else endpoints.exchange_scope]
            self.app = msal.ConfidentialClientApplication(operator.client_id, client_credential=secret, **options)

    def token(self) -> str:
        """A valid Graph access token, signing in once per run."""
        if self._token is None:
            self._token = self._acquire()
        return self._token

    def _acquire(self) -> str:
        if isinstance(self.app, msal.ConfidentialClientApplication):
            result = self.app.acquire_token_for_client(self.scopes)
        else:
            accounts = self.app.get_accounts()
            result = self.app.acquire_token_silent(self.scopes, account=accounts[0]) if accounts else None
            result = result or self._device_flow()
        self.cache.save()
        if "access_token" not in result:
            raise auth_error(result)
        return result["access_token"]

    def _device_flow(self) -> dict[str, Any]:
        flow = self.app.initiate_device_flow(scopes=self.scopes)
        if "user_code" not in flow:
            raise auth_error(flow)
        self.show(flow["message"])
        waited = 0.0
        while True:
            with warnings.catch_warnings():  # msal warns when replay polls faster than real time
                warnings.simplefilter("ignore")
                result = self.app.acquire_token_by_device_flow(flow, exit_condition=lambda _: True)
            if result.get("error") not in PENDING or waited >= flow.get("expires_in", 900):
                return result
            self.transport.clock.sleep(flow["interval"])
            waited += flow["interval"]

    def granted(self) -> set[str]:
        """The Graph permissions the token carries (delegated ``scp`` or application ``roles``)."""
        payload = claims(self.token())
        return set(str(payload.get("scp", "")).split()) | set(payload.get("roles", []))


#: AADSTS codes a brand-new application or secret can give for a while (replication), worth a retry
REPLICATING = {700016, 7000215}
APP_TOKEN_ATTEMPTS = 3
APP_TOKEN_WAIT = 10.0


def app_token(endpoints: Endpoints, transport: Transport, client_id: str, secret: str, scope: str) -> str:
    """An app-only token, as Webex Connect's application would get one; retried briefly while a new
    application or secret replicates. A fresh msal app per attempt: msal caches a 400 for a minute."""
    attempt = 1
    while True:
        app = msal.ConfidentialClientApplication(client_id, client_credential=secret, authority=endpoints.authority,
                                                 http_client=transport.session, instance_discovery=False)
        result = app.acquire_token_for_client([scope])
        if "access_token" in result:
            return result["access_token"]
        error = auth_error(result)
        if attempt >= APP_TOKEN_ATTEMPTS or not REPLICATING & set(error.codes):
            raise error
        transport.counts.retries += 1
        transport.counts.waits.append({"request": "POST token (client credentials)", "status": 401,
                                       "code": f"AADSTS{error.codes[0]}", "wait_seconds": APP_TOKEN_WAIT,
                                       "attempt": attempt})
        transport.clock.sleep(APP_TOKEN_WAIT)
        attempt += 1
