"""Sandbox mode for training: one simulated tenant per trainee, kept in a file between notebooks.

``mode: sandbox`` makes the transport serve the trainee's tenant on loopback for the length of a step
and save its state afterwards, so the notebooks can be run in any order, re-run, and undone with
``runbook sandbox reset TENANT``. ``runbook sandbox break TENANT FAULT`` injects the classic mistakes.
"""

from __future__ import annotations

import json
import os
import re
import secrets as pysecrets
import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from .. import paths
from ..endpoints import EXCHANGE_APP_ID
from ..errors import RunbookError
from .messages import iso
from .tenant import SimulatedTenant

#: attributes of a SimulatedTenant that make up its state (``salt`` varies its secret values from other trainees')
STATE = (
    "seed",
    "key",
    "salt",
    "faults",
    "service_principals",
    "applications",
    "secret_values",
    "assignments",
    "grants",
    "users",
    "transport_smtp_auth_disabled",
    "outbound_policies",
    "outbound_rules",
)
#: its random sources, whose positions are kept too
RANDOM = ("rng", "secret_rng")
#: a tenant name is one file name, never a path
NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")


def state_file(tenant: str) -> Path:
    if not NAME.fullmatch(tenant):
        raise RunbookError(
            f"{tenant!r} is not a tenant name for the sandbox",
            fix="use lower-case letters, digits and inner hyphens (at most 64)",
        )
    return paths.state_dir() / "sandbox" / f"{tenant}.json"


def load(tenant: str, seed_path: Path) -> SimulatedTenant:
    """The trainee's tenant as it was left, or a new one from the seed with secrets of its own."""
    path = state_file(tenant)
    if not path.exists():
        seed = yaml.safe_load(seed_path.read_text(encoding="utf-8"))
        return SimulatedTenant(seed, pending_polls=0, salt=pysecrets.token_hex(16))
    data = json.loads(path.read_text(encoding="utf-8"))
    missing = [name for name in (*STATE, *RANDOM) if name not in data]
    if missing:
        raise RunbookError(
            f"the sandbox state of {tenant} lacks {', '.join(missing)}: an older kit wrote it",
            fix=f"runbook sandbox reset {tenant}",
        )
    simulated = SimulatedTenant(data["seed"], pending_polls=0, salt=data["salt"])
    for name in STATE:
        setattr(simulated, name, data[name])
    for name in RANDOM:
        version, internal, gauss = data[name]
        getattr(simulated, name).setstate((version, tuple(internal), gauss))
    simulated.store = data.get("store")
    return simulated


def save(tenant: str, simulated: SimulatedTenant, store: dict[str, Any] | None = None) -> None:
    """Keep the trainee's tenant: readable by its owner only (it holds client secrets and the token-signing
    key), replaced whole so a crash never leaves half a file."""
    data = {name: getattr(simulated, name) for name in STATE}
    data.update({name: list(getattr(simulated, name).getstate()) for name in RANDOM})
    data["store"] = store or simulated.store
    path = state_file(tenant)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{tenant}.", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def reset(tenant: str) -> bool:
    """Start the trainee's tenant over; True if there was one."""
    path = state_file(tenant)
    existed = path.exists()
    path.unlink(missing_ok=True)
    return existed


# --- the classic mistakes, for exercises ----------------------------------------------------------


def _our_app(t: SimulatedTenant) -> dict[str, Any]:
    apps = [a for a in t.applications if a["appId"] != EXCHANGE_APP_ID]
    if not apps:
        raise RunbookError("the trainee's tenant has no application yet", fix="run notebook 02 first")
    return apps[-1]


def _redirect_uri_typo(t: SimulatedTenant) -> str:
    app = _our_app(t)
    uris = app["web"]["redirectUris"]
    good = next(u for u in uris if u.endswith("/callback"))
    bad = good[:-1] + "k" if not good.endswith("k") else good[:-1] + "c"  # one character off
    app["web"]["redirectUris"] = [bad if u == good else u for u in uris]
    return f"redirect URI {good} is now {bad}"


def _consent_missing(t: SimulatedTenant) -> str:
    app = _our_app(t)
    sps = {sp["id"] for sp in t.service_principals if sp["appId"] == app["appId"]}
    t.assignments = [a for a in t.assignments if a["principalId"] not in sps]
    return "admin consent for Mail.Send revoked"


def _secret_expired(t: SimulatedTenant) -> str:
    yesterday = iso(t.now() - timedelta(days=1))
    for cred in _our_app(t)["passwordCredentials"]:
        cred["endDateTime"] = yesterday
    return "every client secret expired yesterday"


def _secret_id_pasted(t: SimulatedTenant) -> str:
    from .. import secrets
    from ..params import SecretRef

    creds = _our_app(t)["passwordCredentials"]
    if not creds or not t.store:
        raise RunbookError("the application has no secret in a known store yet", fix="run notebook 02 first")
    secrets.write(SecretRef(**t.store), creds[-1]["keyId"])
    return f"the secret store now holds the Secret ID {creds[-1]['keyId']} instead of the Value"


def _smtp_auth_disabled(t: SimulatedTenant) -> str:
    for user in t.users.values():
        user["SmtpClientAuthenticationDisabled"] = True
    return "authenticated SMTP turned off for the mailbox"


def _forwarding_blocked(t: SimulatedTenant) -> str:
    t.outbound_rules = []
    t.outbound_policies = [p for p in t.outbound_policies if p.get("IsDefault")]
    for policy in t.outbound_policies:
        policy["AutoForwardingMode"] = "Automatic"
    return "external forwarding blocked again (dedicated policy and rule removed)"


def _user_consent_disabled(t: SimulatedTenant) -> str:
    t.seed["user_consent"] = "off"
    return "user consent turned off in the tenant"


FAULTS: dict[str, Callable[[SimulatedTenant], str]] = {  # the same names as FAULT_NAMES (a test checks)
    "redirect-uri-typo": _redirect_uri_typo,
    "consent-missing": _consent_missing,
    "secret-expired": _secret_expired,
    "secret-id-pasted": _secret_id_pasted,
    "smtp-auth-disabled": _smtp_auth_disabled,
    "forwarding-blocked": _forwarding_blocked,
    "user-consent-disabled": _user_consent_disabled,
}


def break_tenant(tenant: str, fault: str) -> str:
    """Inject one classic mistake into the trainee's tenant; returns what was done."""
    if not state_file(tenant).exists():
        raise RunbookError(f"tenant {tenant} has no sandbox yet", fix="run its notebooks in sandbox mode first")
    simulated = load(tenant, Path())
    done = FAULTS[fault](simulated)
    save(tenant, simulated)
    return done
