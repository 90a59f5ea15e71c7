"""Secrets never land in an output: every demo tenant recorded against a simulated tenant whose every
secret, token, refresh token, device code and cookie carries a canary, then replayed as a batch."""

from __future__ import annotations

import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from runbook_lib.config import params, secrets
from runbook_lib.running import batch, demos

from conftest import CANARY, ROOT, scan

pytestmark = pytest.mark.e2e

DEMO = ROOT / "params" / "demo"
GUID = re.compile(r"^[0-9a-f-]{36}$")


def prepare(tenant: str, tmp_path: Path) -> Path:
    """The demo tenant's parameters with its recordings and a copy of its secret store in tmp."""
    raw = yaml.safe_load((DEMO / f"{tenant}.yaml").read_text())
    recordings = tmp_path / "recordings" / tenant
    recordings.mkdir(parents=True)
    shutil.copy(ROOT / "recordings" / tenant / "tenant.yaml", recordings / "tenant.yaml")
    raw["recordings"] = str(recordings)
    store = secrets.private_copy(params.validate(raw).secret_store, tmp_path / "stores", f"{tenant}.secret")
    raw["secret_store"] = store.model_dump(exclude_none=True)
    path = tmp_path / "params" / f"{tenant}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return path


def test_no_secret_reaches_recordings_records_logs_or_batch_summaries(tmp_path, capfd):
    tenants = sorted(p.stem for p in DEMO.glob("*.yaml"))
    files = [prepare(t, tmp_path) for t in tenants]
    with ThreadPoolExecutor(max_workers=6) as pool:
        recorded = list(
            pool.map(
                lambda f: demos.record(
                    f,
                    canary=CANARY,
                    archive=tmp_path / "record-archive",
                    pending_polls=0,
                    store=params.load(f).secret_store,
                ),
                files,
            )
        )
    assert len(recorded) == len(tenants)
    issued = [p for p in (tmp_path / "stores").glob("*.secret") if CANARY in p.read_text()]
    assert issued, "the simulated tenants issued no canary secret: this test would prove nothing"
    record, _ = batch.run_batch([str(f) for f in files], jobs=3, archive=tmp_path / "archive", progress=print)
    logs = capfd.readouterr()

    committed = [p.read_text() for p in (DEMO / "secrets").glob("*.secret")]
    # a Secret ID is public, and so is a recording's placeholder that a replay stored
    needles = [CANARY] + [value for value in committed if not GUID.match(value) and "-scrubbed-" not in value]
    for folder in ("recordings", "record-archive", "archive"):  # seeds are the simulated tenants' input
        assert scan(tmp_path / folder, needles, skip=("tenant.yaml",)) == [], folder
    assert not [n for n in needles if n in logs.out or n in logs.err]
    notebooks = list((tmp_path / "archive").rglob("*.ipynb"))
    assert len(notebooks) > 40 and (record / "batch.json").exists()
