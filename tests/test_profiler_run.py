"""The profiler runs: one cold run of the demo tenant, broken down kit side and kernel side."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.e2e


def test_the_profiler_smoke_runs_and_prints_its_breakdown():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "profile_run.py"), "--smoke"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "one cold run (smoke)" in out
    assert "kit side" in out and "kernel side, per step" in out and "preflight" in out
