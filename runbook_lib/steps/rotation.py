"""Two-phase rotation of the client secret (``08_rotate_secret``), so that Webex Connect never holds a secret the
application no longer has.

* **Phase 1** adds a new secret beside the one the store holds (which keeps working), keeps the old value beside
  the store (:func:`runbook_lib.config.secrets.previous`) and puts the new one in the store, says what to change in
  Webex Connect (the Client Secret field, then Generate Token and Save) and proves that the new secret gets an
  app-only token.
* **Phase 2**, once someone confirms that Webex Connect uses the new secret (``rotation.confirmed_by``, kept in
  the record), removes the old secret, the one the previous value matches, by its Secret ID, and drops the
  previous value.

A rotation is *pending* from phase 1 to phase 2: the previous value matches one of the application's secrets and
the store a newer one. Phase 1 then adds nothing, and only then does phase 2 remove anything; it never removes
the secret the store holds. A plan shows both phases. Values are matched to secrets by their hint
(:mod:`runbook_lib.config.client_secrets`), so an old secret whose hint the stored value shares cannot be told apart
from the new one, and phase 2 leaves it alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..config import client_secrets, registry, secrets, webex
from ..config.client_secrets import AppSecret, StoredMatch
from ..context.checks import Checks
from ..engine.changes import Change, unchanged
from ..engine.results import SecretFacts, StepRecord
from ..errors import StepFailed
from ..tenant import entra, webex_form
from . import verify

if TYPE_CHECKING:
    from ..context.step import Step

STEP = registry.ROTATE_SECRET
#: the change of phase 2: the secret being replaced, named apart from step 2's "client secret"
PREVIOUS = "previous client secret"


@dataclass(frozen=True, eq=False)
class RotationState:
    """The application's secrets, and which of them the store and its previous value hold (read only)."""

    app: dict[str, Any]
    store: str
    listed: list[AppSecret]
    current: StoredMatch
    previous: StoredMatch
    #: the previous entry holds a value, whether or not it matches one of the application's secrets
    previous_held: bool
    now: datetime
    renew_days: int

    @property
    def pending(self) -> bool:
        """Phase 1 is done and phase 2 is not: the store holds another secret than the previous value's, and not
        an older one."""
        new, old = self.current.secret, self.previous.secret
        return new is not None and old is not None and self.current.kind == "matched" and not _older(new, old)

    @property
    def old(self) -> AppSecret | None:
        """The secret phase 2 removes: the previous value's while a rotation is pending; before phase 1 (as a
        plan shows it), the one the store holds now, which phase 1 makes the previous."""
        return self.previous.secret if self.pending else self.current.secret

    def explain(self) -> str:
        if self.pending and self.current.secret and self.previous.secret:
            return (
                f"A rotation is pending: the store {self.store} holds the new secret (hint "
                f"{self.current.secret.hint}...), and the previous one (hint {self.previous.secret.hint}...) still "
                "works until phase 2 removes it."
            )
        return f"No rotation is pending: {self.current.explain(self.store)}."

    def table(self) -> pd.DataFrame:
        """The application's secrets with which the store holds now and which it holds as the previous value."""
        held = {s.key_id: "now" for s in [self.current.secret] if s and self.current.kind == "matched"}
        held |= {s.key_id: "previous" for s in [self.previous.secret] if s and self.previous.kind == "matched"}
        frame = client_secrets.table(self.listed, self.now, self.renew_days)
        frame.insert(0, "in the store", [held.get(key, "") for key in frame["keyId"]])
        return frame

    def _repr_html_(self) -> str:
        return f"<p>{self.explain()}</p>" + self.table().to_html(index=False)

    def __repr__(self) -> str:
        return f"{self.explain()}\n{self.table().to_string(index=False)}"


def _older(one: AppSecret, other: AppSecret) -> bool:
    """Added before ``other`` (or, added in the same second or without start times, expiring first). Graph gives
    times to the second, so a secret added right after another may look as old as it: that is not older."""
    if one.starts is not None and other.starts is not None and one.starts != other.starts:
        return one.starts < other.starts
    return one.expires < other.expires


def _facts(secret: AppSecret, store: str) -> dict[str, str]:
    return {"hint": secret.hint, "expires": secret.expires.date().isoformat(), "keyId": secret.key_id, "store": store}


def read_state(step: Step) -> RotationState:
    """The application (by its key or client ID) and what the store and its previous entry hold. The secret the
    store holds goes into the record's facts, with its fingerprint."""
    app = entra.require_application(step, "to rotate the secret of")
    ref = step.params.secret_store
    now = step.clock.now()
    listed = client_secrets.app_secrets(app)
    value, held = secrets.read(ref), secrets.read(secrets.previous(ref))
    current = client_secrets.match_stored(value, listed, now)
    others = [s for s in listed if current.secret is None or s.key_id != current.secret.key_id]
    previous = client_secrets.match_stored(held, others, now) if held != value else StoredMatch("empty")
    cred = current.secret
    if current.kind == "matched" and cred is not None and value:
        expires = cred.expires.date().isoformat()
        step.facts.secret = SecretFacts(cred.hint, expires, cred.key_id, ref.describe(), secrets.fingerprint(value))
    return RotationState(
        app,
        ref.describe(),
        listed,
        current,
        previous,
        bool(held),
        now,
        step.params.application.secret_renew_days,
    )


def _require_stored(state: RotationState) -> AppSecret:
    """A rotation starts from the secret the store holds: without one, there is nothing to keep working."""
    if state.current.kind != "matched" or state.current.secret is None:
        raise StepFailed(
            f"nothing to rotate: {state.current.explain(state.store)}; nothing was changed",
            fix="run step 2, which adds a secret and stores its value when the store holds none of the "
            "application's; rotate once Webex Connect uses that one",
            step=registry.APP_REGISTRATION,
        )
    return state.current.secret


def diff_add(state: RotationState, *, lifetime_days: int, within_days: int | None = None) -> Change:
    """Phase 1: a new secret beside the stored one, unless a rotation is pending already, or (``within_days``,
    the batch option) the stored one does not expire within that many days."""
    stored = _require_stored(state)
    facts = _facts(stored, state.store)
    if state.pending and state.previous.secret is not None:
        return unchanged(
            "client secret",
            state.store,
            f"phase 1 done already: the store holds the new secret (hint {stored.hint}...); the previous one "
            f"(hint {state.previous.secret.hint}...) works until phase 2",
            facts,
        )
    days = stored.days_left(state.now)
    if within_days is not None and days > within_days:
        return unchanged(
            "client secret",
            state.store,
            f"not due: the stored secret (hint {stored.hint}...) expires in {days} days, later than the "
            f"{within_days} days asked",
            {**facts, "due": False},
        )
    return Change(
        "client secret",
        state.store,
        "planned",
        f"phase 1: add a new secret beside the stored one (hint {stored.hint}..., which expires {facts['expires']} "
        "and keeps working until phase 2)",
        facts,
        {"store": state.store},
        entra.add_password(state.app, state.now, lifetime_days),
        outcome="created",
    )


def diff_remove(state: RotationState, confirmed_by: str | None) -> Change:
    """Phase 2: the old secret removed by its Secret ID (see :attr:`RotationState.old`); never the one the store
    holds while a rotation is pending."""
    old = state.old
    assert old is not None, "diff_remove needs a stored secret (see _require_stored)"
    which = (
        f"the previous secret (hint {old.hint}..., expires {old.expires.date().isoformat()})"
        if state.pending
        else f"the secret the store holds now (hint {old.hint}...), which phase 1 makes the previous"
    )
    summary = (
        f"phase 2: remove {which}; {confirmed_by} confirmed Webex Connect uses the new one"
        if confirmed_by and state.pending
        else f"phase 2, once Webex Connect uses the new secret: remove {which}"
    )
    return Change(
        PREVIOUS,
        f"hint {old.hint}",
        "planned",
        summary,
        _facts(old, state.store),
        {"confirmed_by": confirmed_by} if confirmed_by else None,
        entra.remove_password(state.app, old.key_id),
        outcome="removed",
    )


def phase_one(step: Step, state: RotationState) -> Change:
    """Add the new secret; once Entra ID accepted it, the old value goes to the previous entry and the new one
    into the store (neither into any output)."""
    ref = step.params.secret_store
    rotation = step.params.rotation
    planned = diff_add(
        state, lifetime_days=step.params.application.secret_lifetime_days, within_days=rotation.within_days
    )
    return entra.add_secret(step, state.app, planned, keep_old=secrets.previous(ref))  # the old value: until phase 2


def phase_two(step: Step, state: RotationState) -> Change:
    """Remove the old secret and drop the previous value, only while a rotation is pending; otherwise stop
    before any change, saying why."""
    stored = _require_stored(state)
    value = secrets.read(step.params.secret_store) or ""
    previous = secrets.previous(step.params.secret_store)
    if not state.previous_held:
        raise StepFailed(
            f"no rotation is pending: {previous.describe()} holds no previous value; nothing was changed",
            fix="run phase 1 first (rotation.phase: 1)",
            step=STEP,
        )
    if state.previous.kind == "empty":  # it holds the value the store holds: phase 1 stopped half-way
        raise StepFailed(
            f"no rotation is pending: {previous.describe()} holds the same secret as the store; nothing was changed",
            fix="run phase 1 again (rotation.phase: 1): it adds the new secret",
            step=STEP,
        )
    if state.previous.kind != "matched":  # removed already: by a phase 2 stopped before the store, or by hand
        where = secrets.delete(previous)
        return step.record(
            unchanged(
                PREVIOUS,
                previous.describe(),
                f"phase 2: the previous secret is no longer on the application (removed already); {where}",
            )
        )
    old = state.old
    if not state.pending or old is None:
        raise StepFailed(
            f"no rotation is pending: the store holds an older secret (hint {stored.hint}...) than the previous "
            "value; nothing was changed",
            fix="check which secret Webex Connect uses; run phase 1 to start a new rotation",
            step=STEP,
        )
    if old.hint and value.startswith(old.hint):
        raise StepFailed(
            f"the old and new secrets share the hint {old.hint}, so the kit cannot tell which the store holds; "
            "nothing was changed",
            fix=f"remove the old one (Secret ID {old.key_id}) in the portal once Webex Connect uses the new one, then "
            f"delete {previous.describe()}",
            step=STEP,
        )
    change, _ = step.executor.apply(  # the previous value goes with the secret, in the same journaled change
        diff_remove(state, step.params.rotation.confirmed_by),
        keep=lambda _: {"summary": f"previous value: {secrets.delete(previous)}"},
    )
    if change.action == "removed":
        state.app["passwordCredentials"] = [c for c in state.app["passwordCredentials"] if c["keyId"] != old.key_id]
    return change


def rotate(step: Step, state: RotationState) -> pd.DataFrame:
    """The phase ``rotation.phase`` names; a plan (``apply: false``) shows both, as the executor records them
    without sending anything. Returns the step's changes."""
    rotation = step.params.rotation
    if step.executor.plan_only:
        first = step.executor.apply(
            diff_add(
                state, lifetime_days=step.params.application.secret_lifetime_days, within_days=rotation.within_days
            )
        )[0]
        if first.action == "planned" or state.pending:
            step.executor.apply(diff_remove(state, rotation.confirmed_by))
    elif rotation.phase == 1:
        phase_one(step, state)
    else:
        phase_two(step, state)
    return step.changes()


def webex_connect_changes(step: Step, state: RotationState) -> Any:
    """What to change in Webex Connect after phase 1, in step 4's words: the Client Secret field (the new
    secret's hint and fingerprint, never its value), then Generate Token and Save."""
    from IPython.display import Markdown

    old, now = state.old, step.facts.secret
    if not step.executor.plan_only and step.params.rotation.phase == 2:
        return Markdown(
            f"Nothing to change in Webex Connect: {step.params.rotation.confirmed_by} confirmed it uses the secret "
            f"with hint {now.hint if now else '?'}..."
        )
    rotated = now is not None and old is not None and now.key_id != old.key_id
    if not rotated and not step.executor.plan_only:
        return Markdown("Nothing to change in Webex Connect: no new secret was added.")
    new = (
        f"{webex_form.client_secret(state.store, now.hint, now.expires)}, fingerprint {now.fingerprint}"
        if rotated and now is not None
        else f"(planned) the new Value phase 1 puts in {state.store}"
    )
    rows = [
        (
            "Client Secret",
            new,
            f"the old Value (hint {old.hint if old else '?'}...) replaced: it works until phase 2; "
            + webex_form.CLIENT_SECRET_NOTE,
        ),
        ("Generate Token", step.params.webex.email_id, webex.CHECKLIST["generate_token"]),
        ("Access Token, Refresh Token, Validity", "filled in by Webex Connect", webex.CHECKLIST["tokens_filled"]),
        ("Save", "", webex.CHECKLIST["saved"]),
    ]
    return pd.DataFrame(rows, columns=["in Webex Connect", "value", "done when"])


def prove(step: Step, state: RotationState) -> Any:
    """The secret the store holds gets an app-only token carrying Mail.Send: verify's own checks, which wait for a
    brand-new secret within ``network.propagation_wait_seconds``, saying so."""
    if step.executor.plan_only:
        from IPython.display import Markdown

        return Markdown("Plan mode: no secret was added or removed, so there is nothing new to prove.")
    kept = step.facts.secret
    checks = Checks(step)
    verify.secret_and_token(step, checks, state.app)
    if kept is not None and step.facts.secret is not None and kept.key_id == step.facts.secret.key_id:
        step.facts.secret = kept  # with its fingerprint
    return checks.table()


def not_due(steps: list[StepRecord]) -> str:
    """Why a run of ``rotation.within_days`` left the tenant alone (its stored secret expires later); empty when
    it rotated, was pending or failed. What a batch summary says of a skipped tenant."""
    return next(
        (c.summary for s in steps if s.step == STEP for c in s.changes if (c.after or {}).get("due") is False), ""
    )
