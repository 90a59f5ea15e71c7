"""Print the requests step 2 sends in every demo scenario, applied and planned (replay, offline).

    .venv/bin/python benchmarks/requests_per_scenario.py

Reads, writes and sign-in requests are counted by the transport; retries are included in the
reads/writes they repeat and also counted on their own.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from runbook_lib import params, paths, runner, secrets

STEP = "02_azure_app_registration"


def measure(tenant: Path, apply: bool, archive: Path) -> dict:
    loaded = params.load(tenant)
    raw = loaded.public()
    store = secrets.private_copy(loaded.secret_store, archive / "store", f"{tenant.stem}.secret")
    raw.update(apply=apply, secret_store=store.model_dump(exclude_none=True))
    [step] = runner.run(params.validate(raw), archive=archive, steps=[STEP], progress=lambda _: None).steps
    return {"status": step.status, **{k: step.counts[k] for k in ("reads", "writes", "auth", "retries")}}


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for tenant in sorted((paths.project_root() / "params" / "demo").glob("*.yaml")):
            if STEP not in params.load(tenant).steps:   # the verify-only scenarios have no step 2
                continue
            applied = measure(tenant, True, Path(tmp))
            planned = measure(tenant, False, Path(tmp))
            rows.append({"tenant": tenant.stem, **applied, "plan writes": planned["writes"]})
    table = pd.DataFrame(rows).rename(columns={"auth": "sign-in"})
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
