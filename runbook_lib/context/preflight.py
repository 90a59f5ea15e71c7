"""What a run needs that can be checked offline, before its first request: where its secrets are
stored, the CA bundle, the recordings folder, the sandbox seed, and the reason and ticket of a change
to a real tenant.

A run that fails at step 2 because the new client secret cannot be written has already created a
secret in Entra ID that nobody holds; a secret written into ``archive/`` or ``params/`` ends up in a
record or a commit. Each is found here instead, with the fix. Checking looks at files only: it
creates and changes nothing.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .. import paths
from ..config import registry
from ..config.params import Params, SecretRef
from ..errors import ParamsError, shorten
from ..records import store as records

PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"

#: the kit's folders a secret store must stay out of, and why
KIT_FOLDERS = {
    "archive": "run records, kept and shared",
    "recordings": "recordings, committed and replayed",
    "notebooks": "notebooks, committed",
    "params": "parameter files, committed and shared",
}
#: the placeholder stores of the demo tenants (committed on purpose: they hold no real secret)
DEMO_STORES = Path("params") / "demo" / "secrets"


def problems(params: Params, *, archive: Path, run: bool = False) -> dict[str, str]:
    """Each field that would make the run fail or leak, with what is wrong and the fix; empty when none.
    ``archive`` is the folder the run will write its record to. ``run``: an operator's run of ``params.steps``
    (``runbook run``, ``plan``, ``batch``), whose changes to a real tenant need a reason and a ticket; not for
    a check of the file alone (``runbook validate``) or the kit's own runs (demo recordings, tests)."""
    found = {
        "secret_store": _shared_demo_store(params) or _store(params.secret_store, archive, writes=True),
        "endpoints.ca_bundle": _ca_bundle(params.endpoints.ca_bundle),
        "recordings": _recordings(params.recordings),
        "mode": _sandbox_seed(params),
        **(_change_request(params) if run else {}),
    }
    if params.operator.secret:
        found["operator.secret"] = _store(params.operator.secret, archive, writes=False)
    return {field: why for field, why in found.items() if why}


def require(params: Params, *, archive: Path, source: str, run: bool = False) -> None:
    """Raise one :class:`ParamsError` naming every problem :func:`problems` finds."""
    found = problems(params, archive=archive, run=run)
    if found:
        raise ParamsError(source, found)


def _change_request(params: Params) -> dict[str, str | None]:
    """A run that may change a real tenant (live or record mode, applying, running a step a plan runs) says why
    and under which change ticket, so its record answers an auditor's first questions; ``--no-ticket`` says
    there is none. Plans, replays and sandboxes change no real tenant."""
    if params.mode not in records.REAL_TENANT_MODES or not params.apply or not registry.plan_steps(params.steps):
        return {}
    why = f"required when a {params.mode}-mode run applies changes (the record names it)"
    change = params.change
    return {
        "change.reason": None if change.reason else f"{why}: give --reason TEXT, or reason under change: in the file",
        "change.ticket": None
        if change.ticket or change.no_ticket
        else f"{why}: give --ticket ID (or ticket under change: in the file), or --no-ticket if the change has none",
    }


def _show(path: Path) -> str:
    return shorten(str(path))


def _real(path: Path) -> Path:
    """Where ``path`` leads; unlike ``Path.resolve`` it does not raise on a loop of symbolic links
    (the ``stat`` that follows reports it)."""
    return Path(os.path.realpath(path))


def _store(ref: SecretRef, archive: Path, *, writes: bool) -> str | None:
    if ref.keyring:
        return _keyring()
    if not ref.file:
        return None  # an environment variable: nothing to check before the run
    path = paths.resolve(ref.file)
    try:
        # the folder a write lands in, and the one a symbolic link leads to (it must pass the same checks)
        return (
            _placement(path, archive)
            or _file(path, writes=writes)
            or _folder(path.parent, writes=writes)
            or _folder(_real(path).parent, writes=False)
        )
    except OSError as exc:
        return (
            f"{_show(path)} cannot be checked ({exc.strerror or exc.__class__.__name__}): give a path to a file you own"
        )


def _keyring() -> str | None:
    import keyring
    from keyring.backends import fail

    if isinstance(keyring.get_keyring(), fail.Keyring):
        return (
            "no keyring is available on this machine (no Secret Service, Keychain or Windows Credential "
            "Manager): use a file store instead, e.g. {file: .runbook/secrets/TENANT.secret}"
        )
    return None


def _shared_demo_store(params: Params) -> str | None:
    """The demo tenants' stores hold placeholders their replays write back; any other mode would write a real
    secret there (a trainee's sandbox secret, or a customer's) and break the demos for everyone."""
    if params.mode == "replay" or not params.secret_store.file:
        return None
    store = _real(paths.resolve(params.secret_store.file))
    if not store.is_relative_to(_real(paths.project_root() / DEMO_STORES)):
        return None
    return (
        f"{shorten(params.secret_store.file)} is a demo tenant's shared store, which only replays may use: "
        f"a {params.mode}-mode run would write its new client secret into it; give this tenant a store of its own, "
        f"e.g. {{file: .runbook/secrets/{params.tenant}.secret}}"
    )


def _placement(path: Path, archive: Path) -> str | None:
    """A store inside a folder the kit archives, commits or shares would publish the secret."""
    root = paths.project_root()
    # where the name points, and where a write lands (it replaces a symbolic link, see secrets.write)
    places = {_real(path), _real(path.parent) / path.name}
    zones = [(_real(root / name), f"the kit's {name}/ folder ({why})") for name, why in KIT_FOLDERS.items()]
    zones.append((_real(archive), "this run's archive folder (run records, kept and shared)"))
    for place in places:
        if place.is_relative_to(_real(root / DEMO_STORES)):
            continue
        for zone, what in zones:
            if place.is_relative_to(zone):
                return (
                    f"{_show(place)} is inside {what}: a secret there would be published with them; "
                    f"keep the store outside them, e.g. {{file: .runbook/secrets/{path.name}}}"
                )
    return None


def _file(path: Path, *, writes: bool) -> str | None:
    """An existing store (or the target of a link to it) must be a private regular file of this user."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return (
            None
            if writes
            else (
                f"{_show(path)} does not exist: put the automation application's client "
                f"secret in it and run chmod 600 {_show(path)}"
            )
        )
    shown = _show(path)
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "a device, pipe or socket"
        return f"{shown} is {kind}, not a file: give the path of a file"
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        return f"{shown} has mode {mode:04o}, so other users can get at the secret: run chmod 600 {shown}"
    if info.st_uid != os.geteuid():
        return (
            f"{shown} belongs to another user (uid {info.st_uid}), who could swap the secret: "
            "keep the store in a file of your own"
        )
    if not os.access(path, os.R_OK):
        return f"{shown} cannot be read by you: run chmod 600 {shown}"
    if writes and not os.access(path, os.W_OK):
        return f"{shown} is not writable, and the kit writes the new client secret to it: run chmod 600 {shown}"
    return None


def _folder(folder: Path, *, writes: bool) -> str | None:
    """The store's folder: others must not write to it (they could replace the store), the kit must
    (it writes a new secret beside the old one and renames it over, creating missing folders 0700)."""
    try:
        info = folder.stat()
    except FileNotFoundError:
        return _creatable(folder) if writes else None
    shown = _show(folder)
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        return (
            f"folder {shown} can be written by other users (mode {mode:04o}), who could replace the "
            f"secret: run chmod 700 {shown}"
        )
    if writes and not os.access(folder, os.W_OK | os.X_OK):
        return (
            f"folder {shown} is not writable, and the kit writes the new client secret there: "
            f"run chmod 700 {shown}, or choose another folder"
        )
    return None


def _creatable(folder: Path) -> str | None:
    """A missing folder is created by the kit: the nearest existing one must let it."""
    ancestor = folder.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return (
            f"folder {_show(folder)} cannot be created, as {_show(ancestor)} is not writable: "
            "create it yourself (mode 0700) or choose another path"
        )
    return None


def _ca_bundle(value: str | None) -> str | None:
    """The bundle must hold a PEM certificate: otherwise every HTTPS request fails at its first handshake."""
    if value is None:
        return None
    path = paths.resolve(value)
    shown = _show(path)
    try:
        if not path.is_file():
            return (
                f"{shown} does not exist or is not a file: give the PEM file of the CA that signs your "
                "proxy's or test server's certificates"
            )
        data = path.read_bytes()
    except OSError as exc:
        return f"{shown} cannot be read ({exc.strerror or exc.__class__.__name__}): give a CA bundle you can read"
    if PEM_CERTIFICATE not in data:
        return (
            f"{shown} holds no PEM certificate (no {PEM_CERTIFICATE.decode()} line): give a PEM file; "
            "a DER file converts with: openssl x509 -inform der -in CA.cer -out CA.pem"
        )
    return None


def _recordings(value: str) -> str | None:
    """A relative recordings path is meant to be in the kit; one that climbs out is a typo or worse."""
    if Path(value).expanduser().is_absolute():
        return None  # explicit: wherever it says
    root = paths.project_root()
    target = _real(root / value)
    if not target.is_relative_to(root):
        return (
            f"{shorten(value)} leads out of the kit (to {_show(target)}): give a path inside it, such as "
            "recordings/TENANT, or an absolute path if the recordings must live elsewhere"
        )
    return None


def _sandbox_seed(params: Params) -> str | None:
    if params.mode != "sandbox":
        return None
    seed = paths.resolve(params.recordings) / "tenant.yaml"
    if not seed.is_file():
        return (
            f"sandbox mode needs the seed {_show(seed)}, which does not exist: set recordings to a folder "
            "with a tenant.yaml, such as recordings/contoso"
        )
    return None
