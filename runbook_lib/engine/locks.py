"""One run at a time per tenant and application, whichever archive folder, parameter file or way of starting
the notebooks it uses (``runbook run``, a batch, a notebook run by hand, papermill, nbconvert).

Two runs that both find no application would both create one. The lock is an ``fcntl.flock`` on a
file in the kit's private state (``locks/`` under :func:`paths.state_dir`), named from the tenant ID
and the application's key (its ``uniqueName``), both case-folded, so a display name typed in another case
takes the same lock. The operating system releases it when its process ends, however it ends, so a killed run
leaves no lock behind: the next run takes it over. While held, the file names its holder, for the message a
second run gets.

A replay touches no tenant, so it takes no tenant's lock: its lock only keeps two replays of the same tenant
name from sealing into the same archive folder at once (a batch of the demo tenants runs ``tailspin`` and
``tailspin-pick``, one tenant ID, side by side).
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import requests
import yaml

from .. import paths
from ..config import endpoints
from ..config.params import GUID_RE, Params
from ..config.secrets import private_folder
from ..errors import LockHeld, RunbookError

#: how often a run that may wait tries the lock again
POLL_SECONDS = 0.2


def lock_file(params: Params) -> Path:
    """The lock of the tenant and application ``params`` configure. The tenant ID is a GUID or a domain
    (safe in a file name); the application's name is reduced to safe characters and given a short hash,
    so that any name works and two names never share a lock by accident."""
    if params.mode == "replay":
        return paths.state_dir() / "locks" / f"replay--{params.tenant}.lock"
    key = params.application.key.casefold()
    slug = "-".join(re.findall(r"[a-z0-9]+", key))[:40] or "app"
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:10]
    return paths.state_dir() / "locks" / f"{tenant_guid(params)}--{slug}-{digest}.lock"


def tenant_guid(params: Params) -> str:
    """The tenant's ID however the parameters name it, so that a run by the tenant's domain and one by its ID take
    one lock: a GUID as it is; a verified domain resolved the way Entra ID resolves it, through its OpenID
    configuration (whose issuer names the tenant's ID), or, for a trainee's sandbox, through its seed."""
    given = params.tenant_id.casefold()
    if GUID_RE.fullmatch(given):
        return given
    if params.mode == "sandbox":
        seed = yaml.safe_load((paths.resolve(params.recordings) / "tenant.yaml").read_text(encoding="utf-8")) or {}
        if str(seed.get("domain", "")).casefold() == given and GUID_RE.fullmatch(str(seed.get("tenant_id", ""))):
            return str(seed["tenant_id"]).casefold()
        return given
    host = endpoints.for_params(params).authority_host
    session = requests.Session()
    if params.endpoints.ca_bundle or params.endpoints.proxy:
        session.trust_env = False
    if params.endpoints.ca_bundle:
        session.verify = str(paths.resolve(params.endpoints.ca_bundle))
    if params.endpoints.proxy:
        session.proxies = {"https": params.endpoints.proxy}
    url = f"https://{host}/{params.tenant_id}/v2.0/.well-known/openid-configuration"
    try:
        issuer = str(session.get(url, timeout=params.network.read_timeout).json().get("issuer", ""))
    except (requests.RequestException, ValueError) as error:
        raise RunbookError(
            f"the tenant {params.tenant_id} could not be resolved to its ID ({type(error).__name__})",
            fix="give tenant_id as the tenant's Directory (tenant) ID, a GUID, or check the network",
        ) from None
    found = re.search(r"[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12}", issuer.casefold())
    if found is None:
        raise RunbookError(
            f"Entra ID does not know the tenant {params.tenant_id}",
            fix="give tenant_id as the tenant's Directory (tenant) ID, a GUID, or one of its verified domains",
        )
    return found.group(0)


@contextmanager
def tenant_lock(params: Params, *, wait_seconds: float = 0.0, command: str = "run") -> Iterator[None]:
    """Hold the lock of the tenant and application for the ``with`` block, released however it ends.
    Held elsewhere: raise :class:`LockHeld` at once, or after trying for ``wait_seconds``."""
    path = lock_file(params)
    try:
        private_folder(path.parent)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise RunbookError(
            f"cannot open the tenant lock {path} ({exc.strerror or exc.__class__.__name__})",
            fix="make that folder yours and writable, or set RUNBOOK_STATE to a private folder of your own",
        ) from None
    with os.fdopen(fd, "r+", encoding="utf-8") as handle:
        _acquire(handle, params, wait_seconds)
        try:
            _write(handle, json.dumps(_holder(params, command)))
            yield
        finally:
            _write(handle, "")  # a lock file names its holder only while it is held
            fcntl.flock(handle, fcntl.LOCK_UN)


def flock_within(handle: IO[str], wait_seconds: float) -> bool:
    """Take ``handle``'s exclusive lock, trying again until ``wait_seconds`` have passed; False if it stayed held."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_SECONDS)


def _acquire(handle: IO[str], params: Params, wait_seconds: float) -> None:
    if not flock_within(handle, wait_seconds):
        raise LockHeld(
            params.tenant_id, params.application.display_name, _read_holder(handle), waited=max(wait_seconds, 0.0)
        )


def local_account() -> str:
    """The operating-system account running the kit: named in a lock, and in a record beside the identity
    that signed in."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this user ID (a container's anonymous user)
        return f"uid {os.getuid()}"


def _holder(params: Params, command: str) -> dict[str, Any]:
    """Who holds the lock, for the message of a run that finds it held (no secret: names and times only)."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "user": local_account(),
        "tenant": params.tenant,
        "command": command,
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _read_holder(handle: IO[str]) -> dict[str, Any]:
    handle.seek(0)
    try:
        holder = json.loads(handle.read())
    except ValueError:  # empty or half written: the holder has only just taken the lock
        return {}
    return holder if isinstance(holder, dict) else {}


def _write(handle: IO[str], text: str) -> None:
    handle.seek(0)
    handle.truncate()
    handle.write(text)
    handle.flush()
