"""Sandbox mode for training: one simulated tenant per trainee, kept in a file between notebooks.

``mode: sandbox`` makes the transport serve the trainee's tenant on loopback for the length of a step
and save its state afterwards, so the notebooks can be run in any order, re-run, and undone with
``runbook sandbox reset``. ``runbook sandbox break`` injects the classic mistakes (:mod:`.mistakes`); the
tenant remembers which, and when, so the trainer's ``runbook sandbox status`` can say which are still
unrepaired; ``runbook sandbox repair`` makes the fixes an administrator makes in a portal.

A trainee's state lives in ``<state folder>/sandbox/<tenant>.json`` (the state folder is ``.runbook/``
in the kit, or what ``RUNBOOK_STATE`` names), readable by its owner only: it holds the tenant's client
secret values and its token-signing key.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets as pysecrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from .. import paths
from ..config.clouds import EXCHANGE_APP_ID
from ..config.secrets import private_folder
from ..engine.locks import flock_within
from ..errors import RunbookError
from .identity import mailbox_upn
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
#: what the trainer did to it: kept too, absent from the state an older kit wrote
HISTORY = ("started", "injected")
#: state an older kit did not keep (Exchange's RBAC for Applications): empty when absent
LATER = ("exchange_service_principals", "management_scopes", "management_role_assignments")
#: a tenant name is one file name, never a path
NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")


class TraineeTenant(SimulatedTenant):
    """A trainee's simulated tenant: ``started`` when it was seeded (None: unknown, an older kit's state),
    ``injected`` the faults the trainer injected, oldest first (``{"fault": name, "at": ISO time}``)."""

    def __init__(self, seed: dict[str, Any], *, salt: str) -> None:
        super().__init__(seed, pending_polls=0, salt=salt)
        self.started: str | None = iso(self.now())
        self.injected: list[dict[str, str]] = []

    @property
    def trainee_app(self) -> dict[str, Any] | None:
        """The application the trainee's step 2 made (or, in a seed that has one, the latest made by hand)."""
        apps = [a for a in self.applications if a["appId"] != EXCHANGE_APP_ID]
        return next((a for a in reversed(apps) if a.get("uniqueName")), apps[-1] if apps else None)

    @property
    def trainee_sp(self) -> dict[str, Any] | None:
        """The application's service principal, once step 2 made it."""
        app = self.trainee_app
        return self.service_principal(app["appId"]) if app else None

    @property
    def mailbox_user(self) -> dict[str, Any]:
        """The user who signs in as the mailbox (:func:`.identity.mailbox_upn`)."""
        if not self.users:
            raise RunbookError(
                "the trainee's tenant has no mailbox user", fix="seed it from a demo tenant with users (contoso)"
            )
        return self.users[mailbox_upn(self).lower()]


def sandbox_dir(state: Path | None = None) -> Path:
    """Where the trainees' sandboxes are kept, under ``state`` (a kit's state folder) or this kit's."""
    return (state or paths.state_dir()) / "sandbox"


def state_file(tenant: str) -> Path:
    if not NAME.fullmatch(tenant):
        raise RunbookError(
            f"{tenant!r} is not a tenant name for the sandbox",
            fix="use lower-case letters, digits and inner hyphens (at most 64)",
        )
    return sandbox_dir() / f"{tenant}.json"


def _reset_fix(tenant: str) -> str:
    return f"start it over from its seed: runbook sandbox reset TRAINEE.yaml (the parameter file of {tenant})"


def read(path: Path) -> TraineeTenant:
    """The tenant a state file holds; an older kit's file that lacks part of the state, or a file that is not a
    state at all (damaged, edited, a folder), is refused with ``sandbox reset`` as the fix, never a traceback."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        why = error.strerror if isinstance(error, OSError) else "it is not valid JSON"
        raise RunbookError(
            f"the sandbox state of {path.stem} cannot be read ({why})", fix=_reset_fix(path.stem)
        ) from None
    if not isinstance(data, dict):
        raise RunbookError(
            f"the sandbox state of {path.stem} is damaged (not a JSON object)", fix=_reset_fix(path.stem)
        )
    missing = [name for name in (*STATE, *RANDOM) if name not in data]
    if missing:
        raise RunbookError(
            f"the sandbox state of {path.stem} lacks {', '.join(missing)}: an older kit wrote it, or it was damaged",
            fix=_reset_fix(path.stem),
        )
    try:
        simulated = TraineeTenant(data["seed"], salt=data["salt"])
        for name in STATE:
            setattr(simulated, name, data[name])
        for name in RANDOM:
            version, internal, gauss = data[name]
            getattr(simulated, name).setstate((version, tuple(internal), gauss))
        simulated.exchange_sp  # noqa: B018 - a damaged list of service principals shows here, not mid-step
    except (TypeError, ValueError, KeyError, AttributeError, IndexError):
        raise RunbookError(
            f"the sandbox state of {path.stem} is damaged (a value of the wrong type or shape)",
            fix=_reset_fix(path.stem),
        ) from None
    for name in LATER:
        setattr(simulated, name, data.get(name, []))
    simulated.started = data.get("started")
    simulated.injected = data.get("injected", [])
    simulated.store = data.get("store")
    return simulated


#: how long a trainer's break or repair waits for a trainee's step to save the sandbox
LOCK_WAIT_SECONDS = 30.0


@contextmanager
def locked(tenant: str, *, holder: str, wait_seconds: float | None = None) -> Iterator[None]:
    """Hold the trainee's sandbox for the ``with`` block: a step from its load to its save, a break, a repair.
    Otherwise a fault injected while a step runs would be wiped out by the step's save, and the break reported a
    success. Another holder waits up to ``wait_seconds``, then is refused naming what holds it."""
    path = state_file(tenant).with_suffix(".lock")
    private_folder(path.parent)
    with open(path, "a+", encoding="utf-8") as handle:
        if not flock_within(handle, LOCK_WAIT_SECONDS if wait_seconds is None else wait_seconds):
            handle.seek(0)
            raise RunbookError(
                f"the sandbox of {tenant} is in use ({handle.read().strip() or 'by another process'})",
                fix="wait for the step to end, then try again",
            )
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{holder}, pid {os.getpid()}")
            handle.flush()
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def load(tenant: str, seed_path: Path) -> TraineeTenant:
    """The trainee's tenant as it was left, or a new one from the seed with secrets of its own."""
    path = state_file(tenant)
    if not path.exists():
        seed = yaml.safe_load(seed_path.read_text(encoding="utf-8"))
        return TraineeTenant(seed, salt=pysecrets.token_hex(16))
    return read(path)


def save(tenant: str, simulated: TraineeTenant, store: dict[str, Any] | None = None) -> None:
    """Keep the trainee's tenant: readable by its owner only (it holds client secrets and the token-signing
    key), replaced whole so a crash never leaves half a file."""
    data = {name: getattr(simulated, name) for name in (*STATE, *LATER, *HISTORY)}
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
    """Start the trainee's tenant over (every fault injected goes with it); True if there was one. A folder or
    anything else in the state file's place is not the kit's, and is refused."""
    path = state_file(tenant)
    if path.is_dir() or path.is_symlink():
        raise RunbookError(
            f"{path} is not a sandbox state file (a folder or a link): the kit removes only files it wrote",
            fix=f"move {path} away by hand",
        )
    with locked(tenant, holder="sandbox reset"):
        existed = path.exists()
        path.unlink(missing_ok=True)
    return existed
