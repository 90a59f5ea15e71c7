"""Tamper-evident run records: a seal over the manifest, an optional signature, and a chain of records.

A record's ``manifest.json`` lists the sha256 of every other file, so an edited file shows. The seal
(``seal.json``) holds the sha256 of the manifest itself, so an edited manifest (a forged operator, date or
change list, or a file edited together with its hash) shows too. An Ed25519 signature over the manifest
proves who sealed it: without one, anybody able to rewrite a manifest can rewrite the seal as well.
Each manifest also names the tenant's previous sealed record and its manifest hash (``previous``), so
deleting or rewriting a record breaks the check of the next one. Only the newest record has no such
witness: keep its manifest hash (printed by ``runbook run``) somewhere else if that matters.

Sealing makes the files and folders read-only: that stops casual edits, not a determined owner; the
hashes and the signature are what detect those.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import RunbookError

MANIFEST = "manifest.json"
SEAL = "seal.json"
ALGORITHM = "sha256"
_KEYGEN_FIX = "create a key pair with `runbook keygen PRIVATE PUBLIC`, or give the right file"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _entries(folder: Path) -> dict[str, Path]:
    """Everything in the record but folders, the manifest and the seal, by relative path; symbolic links
    are listed, never followed."""
    found = {}
    for top, dirs, files in os.walk(folder):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(top, d))]:
            relative = Path(top, name).relative_to(folder).as_posix()
            if relative not in (MANIFEST, SEAL):
                found[relative] = Path(top, name)
    return found


def file_hashes(folder: Path) -> dict[str, str]:
    """The sha256 of every regular file of a record but the manifest and the seal: what the manifest's
    ``files`` holds. Links and other special files are left out, so the check reports them as altered."""
    return {name: sha256(path) for name, path in sorted(_entries(folder).items()) if stat.S_ISREG(path.lstat().st_mode)}


def _load(path: Path, what: str = "", fix: str = "") -> bytes:
    """A file's bytes, or a RunbookError naming the file (``what``, else its name) and why it is unreadable."""
    what = what or path.name
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise RunbookError(f"{what} is missing", fix=fix) from None
    except OSError as exc:
        raise RunbookError(f"{what} cannot be read ({exc.strerror})", fix=fix) from None


def _object(name: str, data: bytes) -> dict[str, Any]:
    """A JSON object, or a RunbookError saying plainly what else the file holds."""
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise RunbookError(f"{name} is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise RunbookError(f"{name} holds a JSON {type(value).__name__}, not the JSON object a record needs")
    return value


def _sealed_digest(record: Path) -> str:
    """The manifest hash a record's seal vouches for."""
    digest = _object(SEAL, _load(record / SEAL)).get("manifest_sha256")
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise RunbookError(f"{SEAL} holds no manifest sha256")
    return digest


# --- keys -----------------------------------------------------------------------------------------------


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short fingerprint of a public key: what a seal and `runbook keygen` name the key by."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create a file that must not exist yet, with its final mode from the start, and flush it to disk."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
        os.fchmod(fd, mode)  # the umask may have taken bits away
    finally:
        os.close(fd)


def generate_key(private_path: Path, public_path: Path) -> str:
    """A new Ed25519 key pair for signing records: the private key readable by its owner only (mode 0600),
    unencrypted so unattended runs can use it. Returns the key id."""
    for path in (private_path, public_path):
        if path.exists():
            raise RunbookError(
                f"{path} already exists; a key file is never overwritten",
                fix="choose another file name, or move the old key away first",
            )
        path.parent.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    _write_new(
        private_path,
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        0o600,
    )
    _write_new(
        public_path,
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        0o644,
    )
    return key_id(private.public_key())


def load_private(path: Path) -> Ed25519PrivateKey:
    """The signing key, refused if anyone but its owner may read or change it: whoever can read it can sign
    records in the operator's name."""
    data = _load(path, f"the signing key {path}", _KEYGEN_FIX)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise RunbookError(
            f"the signing key {path} is open to other users (mode {mode:04o})",
            fix=f"allow its owner only: chmod 600 {path}",
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        raise RunbookError(f"the signing key {path} is not an unencrypted PEM Ed25519 private key", fix=_KEYGEN_FIX)
    return key


def load_public(path: Path) -> Ed25519PublicKey:
    """The public key a record's signature is checked against."""
    data = _load(path, f"the public key {path}", _KEYGEN_FIX)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, Ed25519PublicKey):
        raise RunbookError(
            f"the public key {path} is not a PEM Ed25519 public key",
            fix="give the public file that `runbook keygen` wrote next to the signing key",
        )
    return key


# --- sealing --------------------------------------------------------------------------------------------


def record_order(name: str) -> tuple[str, int]:
    """Records are named by UTC stamp, with ``-N`` added when two runs start in the same second."""
    stamp, _, suffix = name.partition("-")
    return stamp, int(suffix) if suffix.isdigit() else 0


def previous_link(tenant_folder: Path, before: str | None = None) -> dict[str, str] | None:
    """The link a new record's manifest carries as ``previous``: the tenant's newest sealed record (older
    than the record named ``before``, if given) and its manifest hash; None for the first sealed record.
    Call it under the tenant lock, so two runs cannot link to the same record."""
    sealed = (
        [p for p in tenant_folder.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / SEAL).exists()]
        if tenant_folder.is_dir()
        else []
    )
    if before is not None:
        sealed = [p for p in sealed if record_order(p.name) < record_order(before)]
    if not sealed:
        return None
    newest = max(sealed, key=lambda p: record_order(p.name))
    try:
        return {"record": newest.name, "manifest_sha256": _sealed_digest(newest)}
    except RunbookError as exc:
        raise RunbookError(
            f"the newest record {newest} has a damaged seal ({exc.message}), so a new record cannot link to it",
            fix=f"see what happened with `runbook verify-record {newest}`",
        ) from None


def _file_problems(folder: Path, expected: dict[str, str]) -> list[str]:
    actual = file_hashes(folder)
    present = set(_entries(folder))
    problems = [f"removed: {name} is named in the manifest but gone" for name in sorted(set(expected) - present)]
    problems += [f"added: {name} is not in the manifest" for name in sorted(present - set(expected))]
    problems += [
        f"altered: {name} no longer matches its sha256 in the manifest"
        for name in sorted(set(expected) & present)
        if actual.get(name) != expected[name]
    ]
    return problems


def _manifest_files(manifest: dict[str, Any]) -> dict[str, str]:
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise RunbookError("manifest.json has no 'files' object of file names and their sha256")
    return files


def _sync_read_only(path: Path, mode: int) -> None:
    """Flush a file or folder to disk, then drop its write bits."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _raw(public: Ed25519PublicKey) -> str:
    return base64.b64encode(public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()


def seal(folder: Path, *, signing_key: Path | None = None) -> str:
    """Seal a finished record: write ``seal.json`` over the bytes of its manifest (signed if a key is given),
    then make every file read-only (0444) and every folder 0555. Returns the manifest's sha256.
    A record is sealed once, and only if its files are exactly those the manifest lists: a seal must never
    vouch for a mismatch."""
    key = load_private(signing_key) if signing_key else None
    if (folder / SEAL).exists():
        raise RunbookError(
            f"{folder} is sealed already; a record is sealed once", fix="make a new record instead of changing this one"
        )
    data = _load(folder / MANIFEST)
    problems = _file_problems(folder, _manifest_files(_object(MANIFEST, data)))
    if problems:
        raise RunbookError(
            f"{folder} does not match its manifest, so it is not sealed: " + "; ".join(problems),
            fix="write the manifest after the last file of the record (see file_hashes)",
        )
    digest = hashlib.sha256(data).hexdigest()
    body = {"algorithm": ALGORITHM, "manifest_sha256": digest, "signature": None, "public_key": None, "key_id": None}
    if key:
        body.update(
            signature=base64.b64encode(key.sign(data)).decode(),
            public_key=_raw(key.public_key()),
            key_id=key_id(key.public_key()),
        )
    _write_new(folder / SEAL, (json.dumps(body, indent=2) + "\n").encode(), 0o444)
    for top, _, files in os.walk(folder, topdown=False):
        for name in files:
            if not os.path.islink(os.path.join(top, name)):
                _sync_read_only(Path(top, name), 0o444)
        _sync_read_only(Path(top), 0o555)
    return digest


def make_writable(folder: Path) -> None:
    """Give a sealed record's owner write access back, for tools that prune or clean up archives."""
    for top, _, files in os.walk(folder):
        for path in [Path(top), *(Path(top, name) for name in files)]:
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | stat.S_IWUSR)


# --- verifying ------------------------------------------------------------------------------------------


def _signature_problems(data: bytes, body: dict[str, Any], trusted: Ed25519PublicKey | None) -> list[str]:
    """With a trusted key the record must be signed by that key. Without one, a signature is checked
    against the key the seal carries: that proves the manifest is intact, not who signed it."""
    if body.get("signature") is None:
        return ["not signed: the seal has no signature, but a public key was given to check it"] if trusted else []
    try:
        key = trusted or Ed25519PublicKey.from_public_bytes(
            base64.b64decode(body.get("public_key") or "", validate=True)
        )
        signature = base64.b64decode(body["signature"], validate=True)
    except (ValueError, TypeError):
        return [f"{SEAL} holds a malformed signature or public key"]
    if body.get("key_id") != key_id(key):
        return [
            f"signed by another key: the seal names key {body.get('key_id')}, not {key_id(key)}"
            + (" (the public key given)" if trusted else f" (the public key {SEAL} carries)")
        ]
    try:
        key.verify(signature, data)
    except InvalidSignature:
        return [f"the signature by key {key_id(key)} does not match manifest.json"]
    return []


def _previous_problems(folder: Path, manifest: dict[str, Any]) -> list[str]:
    """The link to the tenant's previous record: that record must still exist, with the manifest and
    seal it had when this record was made."""
    link = manifest.get("previous")
    if link is None:
        return []
    if not isinstance(link, dict) or not isinstance(link.get("record"), str):
        return ["manifest.json has a malformed 'previous' link"]
    name = link["record"]
    previous = folder.parent / name
    if not previous.is_dir():
        return [f"the previous record {name} named by this one is gone"]
    sealed: str | None
    actual: str | None
    try:
        sealed = _sealed_digest(previous)
        actual = hashlib.sha256(_load(previous / MANIFEST)).hexdigest()
    except RunbookError:
        sealed = actual = None
    if not link.get("manifest_sha256") == sealed == actual:
        return [
            f"the previous record {name} was rewritten: its manifest or seal no longer has the hash "
            "this record links to"
        ]
    return []


def verify(folder: Path, *, public_key: Path | None = None) -> list[str]:
    """Everything wrong with a record, one sentence each; an empty list means it is intact. With
    ``public_key`` the record must also be signed by that key. A missing or malformed key file raises
    RunbookError: that is a mistake in the command, not in the record."""
    if not folder.is_dir():
        raise RunbookError(
            f"{folder} is not a run record: it is not a folder",
            fix="give a folder such as archive/<tenant>/<UTC time>/ (see `runbook records TENANT`)",
        )
    trusted = load_public(public_key) if public_key else None
    problems: list[str] = []
    data = manifest = body = None
    try:
        data = _load(folder / MANIFEST)
        manifest = _object(MANIFEST, data)
    except RunbookError as exc:
        problems.append(exc.message)
    if not (folder / SEAL).exists():
        problems.append(f"not sealed: the record has no {SEAL} (records made before sealing have none)")
    else:
        try:
            body = _object(SEAL, _load(folder / SEAL))
        except RunbookError as exc:
            problems.append(exc.message)
    if body is not None and data is not None:
        digest = hashlib.sha256(data).hexdigest()
        if body.get("manifest_sha256") != digest:
            problems.append(
                f"manifest.json differs from the sealed one (sha256 {digest[:12]}…, sealed "
                f"{str(body.get('manifest_sha256'))[:12]}…): its operator, dates, changes or file "
                "hashes were edited"
            )
        problems += _signature_problems(data, body, trusted)
    if manifest is not None:
        try:
            problems += _file_problems(folder, _manifest_files(manifest))
        except RunbookError as exc:
            problems.append(exc.message)
        problems += _previous_problems(folder, manifest)
    return problems
