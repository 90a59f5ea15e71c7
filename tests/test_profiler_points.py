"""The profiler's timing points still exist where it looks for them: a rename in the kit fails here, in seconds,
not in a benchmark run half way (``tests/test_profiler_run.py`` runs it whole)."""

from __future__ import annotations

import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.unit

sys.path.insert(0, str(ROOT / "benchmarks"))
import profile_run  # noqa: E402


def test_every_function_the_profiler_times_exists():
    assert profile_run.points_missing() == []


def test_a_point_that_is_gone_is_named(monkeypatch):
    monkeypatch.setattr(profile_run, "POINTS", [*profile_run.POINTS, (profile_run.runner, "_Kernel", "old name")])
    assert profile_run.points_missing() == ["runbook_lib.running.runner._Kernel"]
