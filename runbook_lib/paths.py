"""Where the kit's folders are. The kit runs from its checkout (installed editable), so the
project root is the folder above this package unless ``RUNBOOK_HOME`` says otherwise."""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The checkout that holds ``notebooks/``, ``params/`` and ``recordings/``."""
    home = os.environ.get("RUNBOOK_HOME")
    return Path(home).resolve() if home else Path(__file__).resolve().parent.parent


def resolve(path: str | Path) -> Path:
    """A parameter's relative path is relative to the project root, wherever the kernel runs."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else project_root() / p


def shown(path: str | Path) -> str:
    """A path as outputs show it: relative to the kit when inside it, so no record or notebook names a machine path."""
    full = resolve(path)
    return str(full.relative_to(project_root())) if full.is_relative_to(project_root()) else str(path)


def state_dir() -> Path:
    """Private state (live token caches): never archived, never committed. ``RUNBOOK_STATE`` moves it."""
    override = os.environ.get("RUNBOOK_STATE")
    return Path(override).resolve() if override else project_root() / ".runbook"


def token_cache(tenant: str) -> Path:
    """The live-mode msal token cache of one tenant (mode 0600; cleared around each run)."""
    return state_dir() / "cache" / f"{tenant}.json"


def forget_tokens(tenant: str) -> None:
    """Delete the tenant's live token cache: at the start and end of every run, so no token outlives it."""
    token_cache(tenant).unlink(missing_ok=True)


#: moves the archive of every run that names none (``--archive``): a notebook run by hand, the tests
ARCHIVE_ENV = "RUNBOOK_ARCHIVE"


def archive_dir() -> Path:
    """Where run records go unless ``--archive`` says otherwise: ``RUNBOOK_ARCHIVE``, else ``archive/`` in the kit."""
    override = os.environ.get(ARCHIVE_ENV)
    return Path(override).resolve() if override else project_root() / "archive"
