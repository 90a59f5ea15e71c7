"""The one list of the kit's steps: each notebook, what kind of step it is, and when it runs.

Everything that needs a step's name or nature asks here: the parameter schema (which steps a file may
name), ``runbook run`` (what a plain run includes, what still runs after a failure), ``runbook plan``
(the steps that produce a plan), the steps' own error messages (which notebook fixes what).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StepSpec:
    name: str
    title: str
    #: a plan (``runbook plan``, ``apply: false``) runs it: it changes the tenant, or checks what the changes need
    in_plan: bool
    #: still runs when an earlier step of the run failed (troubleshooting reads the failures)
    after_failure: bool = False
    #: a plain ``runbook run`` (no ``--steps``) includes it: the six steps of the procedure; the day-two
    #: steps (fleet health, rotation, teardown) run only when named
    by_default: bool = True

    @property
    def notebook(self) -> str:
        return f"{self.name}.ipynb"


STEPS: tuple[StepSpec, ...] = (
    StepSpec("01_webex_connect_app", "the Webex Connect values", in_plan=True),
    StepSpec("02_azure_app_registration", "the Entra ID application", in_plan=True),
    StepSpec("03_office365_mailbox", "the Office 365 mailbox", in_plan=True),
    StepSpec("04_webex_connect_email_app", "the Webex Connect Email app form", in_plan=False),
    StepSpec("05_verify", "verify", in_plan=False),
    StepSpec("06_troubleshoot", "troubleshoot", in_plan=False, after_failure=True),
    StepSpec("07_fleet_health", "fleet health", in_plan=False, by_default=False),
    StepSpec("08_rotate_secret", "client secret rotation", in_plan=True, by_default=False),
    StepSpec("09_teardown", "teardown", in_plan=True, by_default=False),
)
BY_NAME = {s.name: s for s in STEPS}
#: every step a run may name
NAMES: tuple[str, ...] = tuple(s.name for s in STEPS)
#: the procedure: what a plain ``runbook run`` runs
PROCEDURE: tuple[str, ...] = tuple(s.name for s in STEPS if s.by_default)

WEBEX_VALUES, APP_REGISTRATION, MAILBOX, WEBEX_FORM, VERIFY, TROUBLESHOOT = PROCEDURE
FLEET_HEALTH, ROTATE_SECRET, TEARDOWN = (s.name for s in STEPS if not s.by_default)


def plan_steps(names: list[str]) -> list[str]:
    """The steps of ``names`` a plan runs."""
    return [n for n in names if BY_NAME[n].in_plan]
