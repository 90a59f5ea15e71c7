"""The parameter schema of one tenant, validated before anything is sent or written.

A parameter file never holds a secret value: fields that would (``secret``, ``password``,
``token`` ...) must be *references*, ``{env: NAME}``, ``{file: PATH}`` or ``{keyring: SERVICE/USER}``.
papermill copies every parameter into the archived notebook twice, so this rule is what keeps
secrets out of the change record.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ..errors import ParamsError, quoted
from . import registry, strict_yaml, webex
from .clouds import CLOUDS

GUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
DOMAIN_RE = re.compile(r"^(?=.{4,253}$)([a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,}$", re.IGNORECASE)
SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
SECRET_WORDS = re.compile(r"secret|password|passwd|token|credential", re.IGNORECASE)

#: what a value of any field must not hold: a secret written as ``word=value`` or ``word:value`` (not
#: ``word: text``, which is prose), an Entra ID client secret's value (three characters, a digit and ``Q~``, then
#: 30 or more), or a token (a JWT starts ``eyJ``)
SECRET_LOOKING = re.compile(
    rf"(?:{SECRET_WORDS.pattern})\w*(?:\s*=\s*|:)\S|[\w.~-]{{3}}\dQ~|\beyJ[\w-]+\.[\w-]+", re.IGNORECASE
)
#: literal pieces every match of :data:`SECRET_LOOKING` holds, looked for first: the expression itself is slow on a
#: value megabytes long, and such a value is refused for its length anyway
_SECRET_PIECES = ("secret", "password", "passwd", "token", "credential", "q~", "eyj")


def looks_secret(value: str) -> bool:
    """Whether ``value`` holds what looks like a secret (:data:`SECRET_LOOKING`), quickly for any length."""
    lowered = value.lower()
    return any(piece in lowered for piece in _SECRET_PIECES) and SECRET_LOOKING.search(value) is not None


#: said of such a value, which is never quoted: it may be the very secret refused
SECRET_REFUSED = (
    "looks like it holds a secret (a password, a client secret's value or a token): a parameter file and every "
    "record are shared, so name things here, never a credential (a secret goes in secret_store)"
)

#: Unicode categories of characters that show as nothing, or break a line: control (Cc), format (Cf, such as the
#: zero-width space U+200B), surrogate (Cs), line and paragraph separators (Zl, Zp)
INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
#: characters a message names in words
_CHAR_WORDS = {
    " ": "a space",
    "\t": "a tab",
    "\n": "a line break",
    "\r": "a line break (carriage return)",
    "\u00a0": "a no-break space (U+00A0)",
}

#: Webex Connect's regions, as its hosts name them (``<tenant>.<region>.webexconnect.io``,
#: ``mail-<region>.imiconnect.io``): Webex Connect's API reference lists us, eu, uk, ca, au, sg and in. London's
#: environment is ``prodeu1`` and Japan shares Sydney's hosts, so eu/uk and au/jp are not told apart: only a
#: mismatch between two groups is certain.
REGION_GROUPS = {"us": "us", "eu": "eu", "uk": "eu", "ca": "ca", "au": "au", "jp": "au", "sg": "sg", "in": "in"}
_FORWARDING_REGION = re.compile(r"@mail-([a-z0-9]+)\.imiconnect\.io", re.IGNORECASE)
#: scripts whose letters look alike: a name mixing them may only look like the name meant
CONFUSABLE_SCRIPTS = ("LATIN", "CYRILLIC", "GREEK")

#: The "Microsoft Graph Command Line Tools" public client: preauthorized for dynamic Graph scopes.
GRAPH_CLI_CLIENT_ID = "14d82eec-204b-4c2f-b7e8-296a70dab67e"

Mode = Literal["replay", "live", "record", "sandbox"]
#: the procedure's notebooks, in order: what a run includes unless ``steps`` names others
STEP_NAMES = registry.PROCEDURE


def _char(ch: str) -> str:
    """``ch`` in words, for a message: "a tab", "an invisible character (U+200B ZERO WIDTH SPACE)"."""
    if ch in _CHAR_WORDS:
        return _CHAR_WORDS[ch]
    name = unicodedata.name(ch, "")
    kind = {"Cc": "a control character", "Zs": "a space"}.get(unicodedata.category(ch), "an invisible character")
    return f"{kind} (U+{ord(ch):04X}{' ' + name if name else ''})"


def _blank(ch: str) -> bool:
    """Whitespace of any kind, or a character that shows as nothing."""
    return ch.isspace() or unicodedata.category(ch) in INVISIBLE | {"Zs"}


def hidden_problem(value: str, *, spaces_inside: bool) -> str | None:
    """What in ``value`` cannot be seen or breaks a line, in words, or None: whitespace or an invisible character
    at either end, and inside, an invisible character (and, unless ``spaces_inside``, any whitespace)."""
    if value and _blank(value[0]):
        return f"starts with {_char(value[0])}"
    if value and _blank(value[-1]):
        return f"ends with {_char(value[-1])}"
    for found in re.finditer(r"[^\x21-\x7e]", value):  # anything but visible ASCII: rare, so looked at one by one
        ch = found.group()
        if unicodedata.category(ch) in INVISIBLE or (not spaces_inside and _blank(ch)):
            return f"holds {_char(ch)} at character {found.start() + 1}"
    return None


def _name_problem(value: str) -> str | None:
    """Why ``value`` cannot be a name that becomes an object's name or a record's text, or None."""
    why = hidden_problem(value, spaces_inside=True)
    if why:
        return f"{why}: a name must not start or end with a space or hold an invisible character; type it again"
    if looks_secret(value):
        return SECRET_REFUSED
    return None


def _valid_name(value: str) -> str:
    """``value``, once it can be a name (:func:`_name_problem`): a pydantic validator."""
    why = _name_problem(value)
    if why:
        raise ValueError(why)
    return value


#: a name that becomes an object's name or a record's text
Name = Annotated[str, AfterValidator(_valid_name)]


def _address_problem(value: str, expected: str) -> str | None:
    """Why ``value`` is not an email address as it will be used (the whole value, not a line of it), or None."""
    why = hidden_problem(value, spaces_inside=False)
    if why:
        return f"{why}: an email address holds no space, line break or invisible character; copy it again"
    if not webex.EMAIL_RE.fullmatch(value):
        return f"{quoted(value)} is not {expected}"
    return None


def callback_problem(value: str) -> str | None:
    """Why ``value`` cannot be registered as the Webex Connect Call Back URL, in plain words, or None. Accepted
    only as it will be registered: ``https://`` + the host in lower case + ``/callback``, nothing else."""
    again = "copy the Call Back URL again from Webex Connect"
    why = hidden_problem(value, spaces_inside=False)
    if why:
        return (
            f"{why}: a URL holds no space, line break or invisible character, and it is registered as written; {again}"
        )
    if not value.isascii():
        ch = next(c for c in value if not c.isascii())
        return (
            f"holds {ch!r} (U+{ord(ch):04X} {unicodedata.name(ch, '')}) at character {value.index(ch) + 1}: Webex "
            f"Connect's Call Back URL is plain ASCII, and a letter that only looks like another names another host; "
            f"{again}"
        )
    scheme, sep, rest = value.partition("://")
    authority = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    if not sep or scheme.lower() != "https":
        return f"{quoted(value)} must start with https:// (a web redirect URI is https only); {again}"
    if "@" in authority:  # never quoted: the part before @ may be a password
        return (
            "has a user name or password before the host (text ending in '@'): a Call Back URL has none, and the "
            f"host it seems to name is not the one it does; {again}"
        )
    if ":" in authority:
        return f"{quoted(value)} names a port (':' after the host): Webex Connect's Call Back URL has none; {again}"
    if "?" in value:
        return f"{quoted(value)} has a query ('?' and what follows, even empty): the URL ends with /callback; {again}"
    if "#" in value:
        return f"{quoted(value)} has a fragment ('#' and what follows): the URL ends with /callback; {again}"
    why = webex.problem("callback_url", value)
    if why:
        return why
    normal = f"https://{authority.lower()}/callback"
    if value != normal:
        return (
            f"{quoted(value)} is not written in its normal form: write it as {quoted(normal)} (https and the host "
            "in lower case), exactly as it is registered as the redirect URI"
        )
    return None


def region_problems(data: Any) -> dict[str, str]:
    """The Call Back URL's region against the forwarding address's, on raw parameter data: both are copied from
    one Webex Connect tenant, so a clear mismatch (``eu`` beside ``mail-us``) is a value copied from another."""
    values = data.get("webex") if isinstance(data, Mapping) else None
    if not isinstance(values, Mapping):
        return {}
    url, address = values.get("callback_url"), values.get("forwarding_address")
    if not (isinstance(url, str) and isinstance(address, str)) or callback_problem(url):
        return {}
    if not webex.FORWARDING_RE.fullmatch(address):
        return {}
    labels = (urlsplit(url).hostname or "").split(".")
    found = _FORWARDING_REGION.search(address)
    if len(labels) != 4 or labels[-2:] != ["webexconnect", "io"] or not found:
        return {}  # a legacy https://<pod>.imiconnect.io/callback names no region
    ours, theirs = labels[1], found.group(1).lower()
    if ours in REGION_GROUPS and theirs in REGION_GROUPS and REGION_GROUPS[ours] != REGION_GROUPS[theirs]:
        return {
            "webex.callback_url": f"is in Webex Connect region {ours!r} (.{ours}.webexconnect.io) but "
            f"webex.forwarding_address is in region {theirs!r} (mail-{theirs}.imiconnect.io): both come from the "
            "same Webex Connect tenant, so their regions agree; copy both again from Webex Connect"
        }
    return {}


def _scripts(text: str) -> Counter[str]:
    """How many of ``text``'s letters each confusable script has (the script: the start of a letter's Unicode
    name, as in LATIN SMALL LETTER A)."""
    scripts = (unicodedata.name(ch, "").split(" ", 1)[0] for ch in text if ch.isalpha())
    return Counter(script for script in scripts if script in CONFUSABLE_SCRIPTS)


def name_warnings(params: Params) -> list[str]:
    """Sentences about names that mix Latin, Cyrillic or Greek letters (a Cyrillic 'а' among Latin ones): not
    refused, since a name may mix scripts on purpose, but such a name may only look like the one meant."""
    names = [
        ("webex.asset_name", params.webex.asset_name),
        ("application.display_name", params.application.display_name),
        ("mailbox.forwarding_policy", params.mailbox.forwarding_policy),
        ("checklist.confirmed_by", params.checklist.confirmed_by),
        ("rotation.confirmed_by", params.rotation.confirmed_by or ""),
    ]
    warnings = []
    for field, value in names:
        scripts = _scripts(value)
        if len(scripts) < 2:
            continue
        main, *others = (script for script, _ in scripts.most_common())
        firsts = []
        for script in others:
            i, ch = next((i, ch) for i, ch in enumerate(value) if unicodedata.name(ch, "").startswith(script + " "))
            firsts.append(f"{script.title()} {ch!r} (U+{ord(ch):04X} {unicodedata.name(ch)}, character {i + 1})")
        warnings.append(
            f"{field} {quoted(value)} mixes {main.title()} letters with {' and '.join(firsts)}: a letter of another "
            "script can look the same and still make another name; type the name again if it was copied"
        )
    return warnings


def _secret_shaped(data: Any, path: str = "") -> dict[str, str]:
    """Every string of the raw data that looks like a secret, by where it is: checked before the fields' own
    validators, whose messages quote the value."""
    found: dict[str, str] = {}
    items = data.items() if isinstance(data, Mapping) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        where = f"{path}.{key}" if path else str(key)
        if isinstance(value, str) and looks_secret(value):
            found[where] = SECRET_REFUSED
        elif isinstance(value, (Mapping, list)):
            found.update(_secret_shaped(value, where))
    return found


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(_Strict):
    """Where a secret lives. Exactly one of the three."""

    env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    file: str | None = None
    keyring: str | None = Field(None, pattern=r"^[^/]+/[^/]+$")

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        given = [k for k in ("env", "file", "keyring") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of env, file or keyring")
        return self

    @field_validator("file")
    @classmethod
    def _not_a_secret_id(cls, value: str | None) -> str | None:
        """A client secret's Secret ID (a GUID) is what operators paste by mistake for its value, and here for
        where the value goes."""
        if value is not None and GUID_RE.fullmatch(Path(value.strip()).name):
            raise ValueError(
                "is a GUID, the shape of a client secret's Secret ID: a Secret ID is not where a secret is kept. "
                "Name the file the secret's value is written to, such as .runbook/secrets/TENANT.secret"
            )
        return value

    def describe(self) -> str:
        kind = next(k for k in ("env", "file", "keyring") if getattr(self, k))
        return f"{kind}:{getattr(self, kind)}"


def _https_url(value: str | None) -> str | None:
    if value is None:
        return value
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"{quoted(value)} must be an https:// URL")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials")
    return value.rstrip("/")


class Endpoints(_Strict):
    """Overrides of the cloud's endpoints, for sovereign or test deployments and corporate proxies."""

    authority_host: str | None = Field(None, pattern=r"^[A-Za-z0-9.-]+(:[0-9]+)?$")
    graph_url: str | None = None
    exchange_url: str | None = None
    smtp_host: str | None = Field(None, pattern=r"^[A-Za-z0-9.-]+$")
    smtp_port: int | None = Field(None, ge=1, le=65535)
    ca_bundle: str | None = None
    proxy: str | None = None

    _urls = field_validator("graph_url", "exchange_url")(_https_url)

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.username or parts.password:  # checked first: this message must not echo a password
            raise ValueError("must not carry credentials (put none in a parameter file)")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{quoted(value)} must be an http:// or https:// proxy URL")
        return value


class WebexValues(_Strict):
    """Step 1: what Webex Connect showed the operator."""

    asset_name: str
    email_id: str
    forwarding_address: str
    callback_url: str

    @field_validator("asset_name", "email_id", "callback_url")
    @classmethod
    def _shape(cls, value: str, info: Any) -> str:
        """Checked as it will be used: the value registered, typed or applied is the value checked."""
        field = info.field_name
        if field == "callback_url":
            why = callback_problem(value)
        elif field == "email_id":
            why = _address_problem(value, webex.EXPECTED["email_id"])
        else:
            why = webex.problem(field, value) or _name_problem(value)
        if why:
            raise ValueError(why)
        return value

    @field_validator("forwarding_address")
    @classmethod
    def _address(cls, value: str) -> str:
        """Any address here; the Webex Connect shape is required in :func:`_non_webex_forwarding`."""
        why = _address_problem(value, webex.EXPECTED["forwarding_address"])
        if why:
            raise ValueError(why)
        return value


class Application(_Strict):
    """Step 2: the Entra ID application registration."""

    display_name: Name = Field("Webex Connect Email", min_length=1, max_length=120)
    app_id: str | None = Field(None, pattern=GUID_RE.pattern)
    secret_lifetime_days: int = Field(180, ge=1, le=730)
    secret_renew_days: int = Field(30, ge=0, le=365)
    remove_expired_secrets: bool = False
    #: the application's alternate key in Graph: the kit creates it idempotently under this key and addresses
    #: it by it in every later step and run (no name search, which lags behind a create); derived from
    #: ``display_name`` unless given
    unique_name: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9._-]{0,62}[a-z0-9]$")
    #: the Exchange Online application permission Mail.Send: ``tenant`` (the support document's way: the
    #: application may send as any mailbox), ``scoped`` (limited to this mailbox with Exchange RBAC for
    #: Applications), ``none`` (only the delegated SMTP.Send that Webex Connect's token uses)
    mail_send: Literal["tenant", "scoped", "none"] = "tenant"

    @property
    def key(self) -> str:
        """``unique_name``, or the display name made into a key: lower case, words joined by dashes."""
        return self.unique_name or (
            "-".join(re.findall(r"[a-z0-9]+", self.display_name.lower()))[:64].strip("-") or "webex-connect-email"
        )


class Rotation(_Strict):
    """The two-phase rotation of the client secret (``08_rotate_secret``, run only when named)."""

    #: 1: add a new secret beside the old one and store it; 2: remove the old one, once Webex Connect uses the new
    phase: Literal[1, 2] = 1
    #: phase 2 only: who confirmed that Webex Connect now uses the new secret (Generate Token, then Save)
    confirmed_by: str | None = Field(None, min_length=1, max_length=100, pattern=r"^[^\r\n]+$", validate_default=True)
    #: phase 1 only when the stored secret expires within this many days (``runbook batch --rotate-within``);
    #: unset: rotate now
    within_days: int | None = Field(None, ge=0, le=730)

    @field_validator("confirmed_by")
    @classmethod
    def _phase_two_is_confirmed(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Named on the field itself, so the error says ``rotation.confirmed_by``."""
        if info.data.get("phase") == 2 and not value:
            raise ValueError("phase 2 removes the old secret: say who confirmed Webex Connect uses the new one")
        return _valid_name(value) if value else value


class Mailbox(_Strict):
    """Step 3: how the mailbox settings are applied."""

    apply_with: Literal["powershell", "adminapi"] = "powershell"
    keep_copy: bool = True
    forwarding_policy: Name = Field(
        "Webex Connect forwarding", min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$"
    )
    use_default_policy: bool = False
    allow_non_webex_forwarding: bool = False


class Checklist(_Strict):
    """Step 4 in headless runs: who confirmed which Webex Connect actions (JupyterLab uses check boxes)."""

    confirmed_by: str = Field("", max_length=120)
    done: list[Literal[tuple(webex.CHECKLIST)]] = []  # type: ignore[valid-type]

    @field_validator("confirmed_by")
    @classmethod
    def _name(cls, value: str) -> str:
        return _valid_name(value) if value else value


class Network(_Strict):
    """How long to wait for Microsoft, and how often to try again (reads and idempotent writes only)."""

    connect_timeout: float = Field(10, gt=0, le=120)
    read_timeout: float = Field(60, gt=0, le=600)
    attempts: int = Field(6, ge=1, le=12)
    max_wait_seconds: float = Field(60, ge=1, le=600)
    #: how long a brand-new secret or permission may take before the token endpoint honours it
    propagation_wait_seconds: float = Field(300, ge=0, le=1800)


class Verify(_Strict):
    """Step 5: thresholds and optional probes."""

    secret_warn_days: int = Field(30, ge=1, le=365)
    mailbox_sign_in: bool = False
    probe_authorize_url: bool = False
    #: after a successful AUTH XOAUTH2, send one short test message from the mailbox to this address
    test_message_to: str | None = None

    @field_validator("test_message_to")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        why = _address_problem(value, "an email address") if value is not None else None
        if why:
            raise ValueError(why)
        return value

    @model_validator(mode="after")
    def _message_needs_sign_in(self) -> Verify:
        if self.test_message_to and not self.mailbox_sign_in:
            raise ValueError("test_message_to needs mailbox_sign_in: true (the message is sent as the mailbox)")
        return self


class Operator(_Strict):
    """Who signs in to make the changes: a person by device code, or automation by client credentials."""

    sign_in: Literal["device_code", "client_credentials"] = "device_code"
    client_id: str = Field(GRAPH_CLI_CLIENT_ID, pattern=GUID_RE.pattern)
    secret: SecretRef | None = None

    @model_validator(mode="after")
    def _secret_for_automation(self) -> Operator:
        if self.sign_in == "client_credentials":
            if self.secret is None:
                raise ValueError("client_credentials sign-in needs secret: {env|file|keyring: ...}")
            if self.client_id == GRAPH_CLI_CLIENT_ID:
                raise ValueError("client_credentials sign-in needs the automation application's client_id")
        return self


class ChangeRequest(_Strict):
    """Why a run changes the tenant, named at the top of its record: the operator's reason and change ticket.
    A run that may change a real tenant (live or record mode, applying) needs both
    (:mod:`runbook_lib.context.preflight`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)

    reason: str | None = Field(None, max_length=500)
    ticket: str | None = Field(None, max_length=100)
    #: ``--no-ticket``, for one run (refused in a parameter file): the change has no ticket, and its record says so
    no_ticket: bool = False

    @field_validator("reason", "ticket")
    @classmethod
    def _one_line_no_secret(cls, value: str | None) -> str | None:
        """Said without quoting the value: it may be the very secret refused."""
        if value is None:
            return value
        if not value.strip():
            raise ValueError("is empty: say it in a few words, or leave it out")
        if re.search(r"[\x00-\x1f\x7f]", value):
            raise ValueError("must be one line of text (no line break, tab or control character)")
        if looks_secret(value):
            raise ValueError(
                "looks like it holds a secret (a password, a client secret's value or a token): a record is "
                "shared, so name the change, never a credential"
            )
        return value.strip()


class Params(_Strict):
    """One tenant's parameters: the same keys as the notebooks' ``parameters`` cells."""

    tenant: str
    tenant_id: str
    cloud: Literal["global", "usgov", "usgov-dod", "china"] = "global"
    endpoints: Endpoints = Endpoints()
    mode: Mode = "replay"
    apply: bool = True
    recordings: str = ""
    webex: WebexValues
    application: Application = Application()
    secret_store: SecretRef
    mailbox: Mailbox = Mailbox()
    checklist: Checklist = Checklist()
    verify: Verify = Verify()
    operator: Operator = Operator()
    network: Network = Network()
    change: ChangeRequest = ChangeRequest()
    consent: Literal["user", "admin"] = "user"
    rotation: Rotation = Rotation()
    steps: list[Literal[tuple(registry.NAMES)]] = list(STEP_NAMES)  # type: ignore[valid-type]

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, value: str) -> str:
        if not SLUG_RE.fullmatch(value):
            raise ValueError(
                f"{quoted(value)} is not a tenant name: the kit's short name for the tenant, such as contoso or "
                "trainee-07: 1 to 64 lowercase letters, digits and hyphens, starting and ending with a letter or digit"
            )
        return value

    @field_validator("tenant_id")
    @classmethod
    def _tenant_id(cls, value: str) -> str:
        if not (GUID_RE.fullmatch(value) or DOMAIN_RE.fullmatch(value)):
            raise ValueError(
                f"{quoted(value)} is neither a tenant GUID nor a verified domain such as contoso.onmicrosoft.com"
            )
        return value

    @field_validator("steps")
    @classmethod
    def _steps(cls, value: list[str]) -> list[str]:
        """An empty list would run nothing and still archive a record; a repeat would run a step twice."""
        if not value:
            raise ValueError("must name at least one step; leave steps out to run them all")
        repeated = [step for step, count in Counter(value).items() if count > 1]
        if repeated:
            raise ValueError(f"names {', '.join(repeated)} more than once; name each step once")
        return value

    @model_validator(mode="after")
    def _default_recordings(self) -> Params:
        if not self.recordings:
            object.__setattr__(self, "recordings", f"recordings/{self.tenant}")
        return self

    def public(self) -> dict[str, Any]:
        """The parameters as plain data: safe to archive, since they hold references only."""
        return self.model_dump(mode="json", exclude_none=True)


assert set(CLOUDS) == {"global", "usgov", "usgov-dod", "china"}, "clouds.yaml and Params.cloud disagree"


def _secret_values(data: Any, model: type[BaseModel] | None, path: str = "") -> dict[str, str]:
    """Secret *values* where only references belong: a reference field given a plain value, or an
    unknown key whose name says secret. Checked on the raw data so the message is about secrets."""
    found: dict[str, str] = {}
    if not isinstance(data, Mapping):
        return found
    fields = model.model_fields if model else {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        field = fields.get(str(key))
        annotation = getattr(field, "annotation", None)
        is_ref = annotation is not None and SecretRef in (getattr(annotation, "__args__", ()) or (annotation,))
        looks_secret = field is None and SECRET_WORDS.search(str(key))
        if (is_ref or looks_secret) and value is not None and not isinstance(value, Mapping):
            found[where] = (
                "holds a secret value; a parameter file may only give a reference "
                "such as {env: NAME}, {file: PATH} or {keyring: SERVICE/USER}"
            )
        elif isinstance(value, Mapping):
            sub = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
            found.update(_secret_values(value, sub, where))
    return found


def _non_webex_forwarding(data: Mapping[str, Any]) -> dict[str, str]:
    """Forwarding to anything but Webex Connect's address is refused unless the file says it is meant."""
    values = data.get("webex")
    mailbox = data.get("mailbox")
    address = values.get("forwarding_address") if isinstance(values, Mapping) else None
    allowed = isinstance(mailbox, Mapping) and mailbox.get("allow_non_webex_forwarding") is True
    if isinstance(address, str) and webex.EMAIL_RE.fullmatch(address) and not allowed:
        why = webex.problem("forwarding_address", address)
        if why:
            return {
                "webex.forwarding_address": _bounded(why, address) + "; if mail really must go elsewhere, set "
                "mailbox.allow_non_webex_forwarding: true"
            }
    return {}


def _bounded(message: str, value: Any) -> str:
    """``message`` with a quoted ``value`` in it cut to its start: validators outside this module
    (:func:`webex.problem`) quote the whole value, which may be megabytes."""
    return message.replace(repr(value), quoted(value)) if isinstance(value, str) else message


def _describe(error: Any) -> tuple[str, str]:
    loc = ".".join(str(part) for part in error["loc"]) or "(file)"
    kind = error["type"]
    if kind == "extra_forbidden":
        return loc, "unknown key"
    if kind == "missing":
        return loc, "required but missing"
    return loc, _bounded(error["msg"].removeprefix("Value error, "), error.get("input"))


def validate(data: Any, source: str = "parameters") -> Params:
    """Validate raw parameter data; raise one :class:`ParamsError` naming every bad field."""
    if not isinstance(data, Mapping):
        raise ParamsError(source, {"(file)": "must be a mapping of parameter names to values"})
    problems = _non_webex_forwarding(data) | _secret_shaped(data) | _secret_values(data, Params) | region_problems(data)
    try:
        params = Params.model_validate(dict(data))
    except ValidationError as exc:
        for error in exc.errors():
            loc, why = _describe(error)
            if not any(loc == bad or loc.startswith(bad + ".") for bad in problems):
                problems.setdefault(loc, why)
        raise ParamsError(source, problems) from None
    if problems:
        raise ParamsError(source, problems)
    return params


def load(path: str | Path) -> Params:
    """Read a tenant's parameter file strictly (see :mod:`runbook_lib.config.strict_yaml`) and validate it. A file may
    not hold ``change.no_ticket``: that is the ``--no-ticket`` option of one run, never a standing exemption."""
    path = Path(path)
    data = strict_yaml.load_file(path)
    change = data.get("change") if isinstance(data, Mapping) else None
    refused = (
        {"change.no_ticket": "is set only by the --no-ticket option of one run: remove it from the file"}
        if isinstance(change, Mapping) and change.get("no_ticket") not in (None, False)
        else {}
    )
    try:
        params = validate(data, str(path))
    except ParamsError as error:
        raise ParamsError(str(path), refused | error.problems) from None
    if refused:
        raise ParamsError(str(path), refused)
    return params


def override(params: Params, overrides: Mapping[str, Any], source: str) -> Params:
    """``params`` with command-line values on top, validated again; a section given as a mapping (``change``)
    is merged key by key, so ``--ticket`` keeps the file's ``change.reason``."""
    data = params.public()
    for key, value in overrides.items():
        data[key] = {**(data.get(key) or {}), **value} if isinstance(value, Mapping) else value
    return validate(data, source)
