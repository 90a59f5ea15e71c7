"""Print the requests step 2 sends in every demo scenario, applied and planned (replay, offline).

    .venv/bin/python benchmarks/requests_per_scenario.py

Reads, writes and sign-in requests are counted by the transport; retries are included in the
reads/writes they repeat and also counted on their own; writes are the accepted ones, failed writes the
write attempts refused or left unanswered. Each run gets its own copy of the scenario's secret store.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from runbook_lib import paths
from runbook_lib.config import params, secrets
from runbook_lib.running import runner

STEP = "02_azure_app_registration"
COUNTS = ("reads", "writes", "failed_writes", "auth", "retries")


def measure(tenant: Path, apply: bool, folder: Path) -> dict[str, Any]:
    loaded = params.load(tenant)
    raw = loaded.public()
    store = secrets.private_copy(loaded.secret_store, folder / "store", f"{tenant.stem}-{apply}.secret")
    raw.update(apply=apply, secret_store=store.model_dump(exclude_none=True))
    result = runner.run(params.validate(raw), archive=folder / "archive", steps=[STEP], progress=lambda _: None)
    [step] = result.steps
    return {"status": step.status, **{k: int(step.counts.get(k, 0)) for k in COUNTS}}


def table(limit: int | None = None) -> pd.DataFrame:
    """One row per demo scenario that has step 2 (the first ``limit`` of them): the applied run's counts and
    the planned run's writes."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        scenarios = [
            t for t in sorted((paths.project_root() / "params" / "demo").glob("*.yaml")) if STEP in params.load(t).steps
        ]  # the verify-only scenarios have no step 2
        for tenant in scenarios[:limit]:
            applied = measure(tenant, True, Path(tmp))
            planned = measure(tenant, False, Path(tmp))
            rows.append({"tenant": tenant.stem, **applied, "plan writes": planned["writes"]})
    return pd.DataFrame(rows).rename(columns={"failed_writes": "failed writes", "auth": "sign-in"})


def main() -> None:
    print(table().to_string(index=False))


if __name__ == "__main__":
    main()
