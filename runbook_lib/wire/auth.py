"""Signing in with msal, and turning msal's error dicts into typed errors.

* People sign in by device code with a public client Microsoft preauthorizes for the resource: the
  "Microsoft Graph Command Line Tools" client for Graph (with exactly the delegated scopes the steps need),
  the Exchange Online PowerShell client for Exchange's admin API. A first-party client asking a resource it
  is not preauthorized for gets AADSTS65002, so each resource has its client.
* Automation signs in with client credentials whose secret comes from a secret store reference.
* Scopes always name the cloud's *resource* (``https://graph.microsoft.com/...``), never an overridden host.

A delegated token acts as the signed-in user and no further: some scopes (``MailboxSettings.Read``) reach
only the user's own data whatever their role. The steps ask only for what a delegated administrator may do
for *other* users.

In live mode the token cache is shared by the notebooks of one run (a file under ``.runbook/cache/``, mode
0600, outside the archive); ``runbook run`` clears it before and after a run so no token outlives it.
msal gets the transport's session as its HTTP client, so its calls are replayed and recorded too.
"""

from __future__ import annotations

import base64
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msal

from .. import paths
from ..config import knowledge, secrets
from ..config.endpoints import Endpoints
from ..config.params import Params
from ..engine.results import Identity
from ..errors import AuthError, RunbookError
from .transport import Transport

#: Delegated Graph scopes the operator consents to, with why each is needed (README lists them).
OPERATOR_SCOPES = {
    "Application.ReadWrite.All": "find, create and update the application; add its secret; "
    "create its service principal",
    "AppRoleAssignment.ReadWrite.All": "grant admin consent for Exchange Online Mail.Send",
    "DelegatedPermissionGrant.ReadWrite.All": "grant tenant-wide consent for SMTP.Send (consent: admin)",
    "Policy.Read.All": "read whether users may consent to applications, and security defaults",
    "User.Read.All": "read the mailbox user: enabled, and whether Exchange Online is provisioned for them",
}
PENDING = {"authorization_pending", "slow_down"}
#: the public client Exchange Online PowerShell signs in with; preauthorized for Exchange's admin API
EXCHANGE_POWERSHELL_CLIENT_ID = "fb78d390-0c51-40cd-8e17-fdbfab77341b"


def clear_cache(params: Params) -> None:
    """Forget the tenant's tokens: called at the start and end of every run."""
    paths.forget_tokens(params.tenant)


def auth_error(result: dict[str, Any]) -> AuthError:
    """msal returns errors as dicts; this names the AADSTS code and the step that fixes it."""
    codes = [int(c) for c in result.get("error_codes") or []]
    entry = next((knowledge.lookup("aadsts", c) for c in codes if knowledge.lookup("aadsts", c)), None)
    return AuthError(
        result.get("error", "unknown_error"),
        codes,
        result.get("error_description", ""),
        fix=entry.fix if entry else "",
        step=entry.notebook if entry else "",
    )


def claims(token: str) -> dict[str, Any]:
    """A JWT's claims, unverified: to read scp/roles/aud and who signed in, never to trust identity."""
    try:
        payload = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def identity(token: str) -> Identity:
    """The signed-in identity a token names: ``upn``/``preferred_username`` for a person, ``appid`` for an app."""
    c = claims(token)
    user = c.get("upn") or c.get("preferred_username")
    return Identity(
        kind="user" if user else "application",
        name=str(user or c.get("appid", "unknown")),
        object_id=str(c.get("oid", "")),
        tenant_id=str(c.get("tid", "")),
        client_id=str(c.get("appid", "")),
    )


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
    ``show`` receives the device-code instructions; ``on_identity`` learns who signed in."""

    def __init__(
        self,
        params: Params,
        endpoints: Endpoints,
        transport: Transport,
        *,
        show: Callable[[str], None] = print,
        resource: str = "graph",
        on_identity: Callable[[Identity], None] | None = None,
    ) -> None:
        self.transport = transport
        self.show = show
        self.on_identity = on_identity
        self.cache = _Cache(transport.token_cache)
        self._token: str | None = None
        options: dict[str, Any] = dict(
            authority=endpoints.authority,
            http_client=transport.session,
            token_cache=self.cache,
            instance_discovery=False,
        )
        operator = params.operator
        graph = resource == "graph"
        if operator.sign_in == "device_code":
            self.scopes = [endpoints.graph_scope(s) for s in OPERATOR_SCOPES] if graph else [endpoints.exchange_scope]
            client_id = operator.client_id if graph else EXCHANGE_POWERSHELL_CLIENT_ID
            self.app: msal.ClientApplication = msal.PublicClientApplication(client_id, **options)
            return
        secret = secrets.read(operator.secret) if operator.secret else None
        if not secret:
            raise RunbookError(
                f"the operator secret ({operator.secret.describe() if operator.secret else 'none'}) is empty",
                fix="put the automation application's secret in the store the parameters name",
            )
        self.scopes = [endpoints.graph_scope(".default") if graph else endpoints.exchange_scope]
        self.app = msal.ConfidentialClientApplication(operator.client_id, client_credential=secret, **options)

    def token(self) -> str:
        """A valid access token, signing in once per step."""
        if self._token is None:
            self._token = self._acquire()
            if self.on_identity is not None:
                self.on_identity(identity(self._token))
        return self._token

    def _acquire(self) -> str:
        if isinstance(self.app, msal.ConfidentialClientApplication):
            result = self.app.acquire_token_for_client(self.scopes)
        else:
            assert isinstance(self.app, msal.PublicClientApplication)
            accounts = self.app.get_accounts()
            result = self.app.acquire_token_silent(self.scopes, account=accounts[0]) if accounts else None
            result = result or device_flow(self.app, self.scopes, self.transport, self.show)
        self.cache.save()
        if "access_token" not in result:
            raise auth_error(result)
        return str(result["access_token"])

    def granted(self) -> set[str]:
        """The permissions the token carries (delegated ``scp`` or application ``roles``)."""
        payload = claims(self.token())
        return set(str(payload.get("scp", "")).split()) | set(payload.get("roles", []))


def device_flow(
    app: msal.PublicClientApplication, scopes: list[str], transport: Transport, show: Callable[[str], None]
) -> dict[str, Any]:
    """A device-code sign-in: show the code, then poll (in the transport's time) until the person has signed in."""
    flow = app.initiate_device_flow(scopes=scopes)
    if "user_code" not in flow:
        raise auth_error(flow)
    note = transport.device_code_note(flow["message"])
    if note:
        show(note)
    waited = 0.0
    while True:
        with warnings.catch_warnings():  # msal warns when replay polls faster than real time
            warnings.simplefilter("ignore")
            result = app.acquire_token_by_device_flow(flow, exit_condition=lambda _: True)
        if result.get("error") not in PENDING or waited >= flow.get("expires_in", 900):
            return result
        transport.clock.sleep(flow["interval"])
        waited += flow["interval"]


#: AADSTS codes a brand-new application or secret gives while it replicates: worth waiting for
REPLICATING = {700016, 7000215}
#: the first wait, doubled each time up to a minute, within ``network.propagation_wait_seconds`` in all
FIRST_WAIT = 5.0


def app_token(
    endpoints: Endpoints,
    transport: Transport,
    client_id: str,
    secret: str,
    scope: str,
    *,
    wait_up_to: float = 0.0,
    show: Callable[[str], None] = print,
) -> str:
    """An app-only token, as Webex Connect's application would get one. While a new application or secret
    replicates (``wait_up_to`` > 0: the secret is brand new) the token endpoint refuses it: wait, within
    ``wait_up_to`` seconds in all, saying so. A fresh msal app per attempt: msal caches a 400 for a minute."""
    waited, pause, attempt = 0.0, FIRST_WAIT, 1
    while True:
        app = msal.ConfidentialClientApplication(
            client_id,
            client_credential=secret,
            authority=endpoints.authority,
            http_client=transport.session,
            instance_discovery=False,
        )
        result = app.acquire_token_for_client([scope])
        if "access_token" in result:
            return str(result["access_token"])
        error = auth_error(result)
        if waited + pause > wait_up_to or not REPLICATING & set(error.codes):
            raise error
        show(
            f"The token endpoint does not honour the new secret yet (AADSTS{error.codes[0]}); Entra ID is still "
            f"replicating it. Waiting {pause:.0f} s ({waited:.0f} of at most {wait_up_to:.0f} s so far)."
        )
        transport.counts.wait("POST token (client credentials)", 401, f"AADSTS{error.codes[0]}", pause, attempt)
        transport.clock.sleep(pause)
        waited += pause
        pause, attempt = min(pause * 2, 60.0), attempt + 1
