"""Where the wall time of one run goes: contoso's six steps in this process, as speed.py's figure (a) runs them.

    .venv/bin/python benchmarks/profile_run.py               # 3 runs after a warm-up; medians
    .venv/bin/python benchmarks/profile_run.py --cprofile    # and one run under cProfile (top functions)

Kit side: the runner's own functions are wrapped with timers in this process only (the library is not
changed). Kernel side: the cells are executed with ``record_timing`` on, and each cell's time is read from
``metadata.execution`` (execute_input to execute_reply). Then, in fresh kernels, the imports the notebooks
make, one after another, and the imports of a whole ``runbook run`` process (``python -X importtime``).
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.manager import KernelManager

from runbook_lib import paths
from runbook_lib.config import params, secrets
from runbook_lib.context import preflight
from runbook_lib.engine import journal
from runbook_lib.records import html_record
from runbook_lib.records import store as records
from runbook_lib.running import runner

SPENT: dict[str, float] = defaultdict(float)
KERNEL_IMPORTS = [
    "IPython.display",
    "numpy",
    "pandas",
    "pydantic",
    "yaml",
    "requests",
    "msal",
    "vcr",
    "runbook_lib.config.params",
    "runbook_lib.context.ui",
    "ipywidgets",
    "runbook_lib.context.step",
    "runbook_lib.tenant.entra",
    "runbook_lib.tenant.exchange",
    "runbook_lib.tenant.webex_form",
    "runbook_lib.steps.verify",
    "runbook_lib.steps.diagnose",
]


def timer(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SPENT[name] += time.perf_counter() - started

    return wrapped


def async_timer(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Like :func:`timer`, keeping each call apart: ``name 1``, ``name 2``, ..."""

    @functools.wraps(fn)
    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            SPENT[f"{name} {sum(k.startswith(name) for k in SPENT) + 1}"] = time.perf_counter() - started

    return wrapped


class TimedClient(runner._StepClient):
    """The runner's client with cell timing recorded into the notebook."""

    def __init__(self, nb: Any, **kwargs: Any) -> None:
        super().__init__(nb, **{**kwargs, "record_timing": True})


#: every function the profiler times, by the object that holds it: a renamed one fails ``points_missing`` (a unit
#: test), never a run half way
POINTS: list[tuple[Any, str, str]] = [
    (runner.Kernel, "__enter__", "kernel start (launch process)"),
    (runner.Kernel, "__exit__", "kernel shutdown"),
    (runner, "_template", "read the template (once per process)"),
    (runner, "parameterize_notebook", "parameterize_notebook"),
    (runner, "step_record", "read the step record"),
    (nbformat, "write", "nbformat.write (validates)"),
    (html_record, "summary_html", "summary HTML (pandas to_html)"),
    (html_record, "render", "html_record.render"),
    (records, "write_text", "write HTML and artifacts"),
    (preflight, "require", "preflight"),
    (records, "seal_abandoned", "seal_abandoned (scan)"),
    (records, "open_record", "open record"),
    (journal.Journal, "append", "journal appends (fsync)"),
    (journal, "read", "journal read"),
    (records, "manifest_for", "manifest"),
    (records, "seal", "seal (hash files, sign)"),
]


def points_missing() -> list[str]:
    """The timed functions that no longer exist where the profiler looks for them."""
    return [f"{getattr(holder, '__name__', holder)}.{name}" for holder, name, _ in POINTS if not hasattr(holder, name)]


def instrument() -> None:
    missing = points_missing()
    if missing:
        raise SystemExit(f"the profiler's timing points are gone: {', '.join(missing)} (update POINTS)")
    for holder, name, label in POINTS:
        setattr(holder, name, timer(label, getattr(holder, name)))
    AsyncKernelClient.wait_for_ready = async_timer("wait_for_ready", AsyncKernelClient.wait_for_ready)
    TimedClient.execute = timer("nbclient execute", TimedClient.execute)
    runner._StepClient = TimedClient  # type: ignore[misc,assignment]


def contoso(folder: Path) -> params.Params:
    source = params.load(paths.project_root() / "params" / "demo" / "contoso.yaml")
    raw = source.public()
    raw["secret_store"] = secrets.private_copy(source.secret_store, folder / "store").model_dump(exclude_none=True)
    return params.validate(raw)


def cell_times(record: Path) -> dict[str, float]:
    """Seconds each kind of cell took in the kernel, per step, from the cells' execution metadata."""
    out: dict[str, float] = {}
    for path in sorted(record.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
            meta = cell.metadata.get("execution", {})
            if "iopub.execute_input" not in meta or "shell.execute_reply" not in meta:
                continue
            seconds = (
                datetime.fromisoformat(meta["shell.execute_reply"].replace("Z", "+00:00"))
                - datetime.fromisoformat(meta["iopub.execute_input"].replace("Z", "+00:00"))
            ).total_seconds()
            first = cell.source.strip().splitlines()[-1][:60] if cell.source.strip() else "(empty)"
            label = "injected parameters" if "injected-parameters" in cell.metadata.get("tags", []) else first
            out[f"{path.stem[:2]} cell {i:02d}: {label}"] = seconds
    return out


def kernel_imports() -> dict[str, float]:
    """Seconds each import adds in a fresh kit kernel, in the order the notebooks need them."""
    code = (
        "import time, json, sys, importlib\n_t = {}\n"
        f"for _m in {KERNEL_IMPORTS!r}:\n"
        "    _s = time.perf_counter(); importlib.import_module(_m); _t[_m] = time.perf_counter() - _s\n"
        "_t['(nbformat loaded)'] = float('nbformat' in sys.modules)\n"
        "print(json.dumps(_t))"
    )
    km = KernelManager(kernel_name=runner.kernel_name())
    km.start_kernel(stderr=subprocess.DEVNULL)
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        found: dict[str, float] = {}

        def output(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream":
                found.update(json.loads(msg["content"]["text"]))

        kc.execute_interactive(code, output_hook=output, timeout=120)
        return found
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def process_imports() -> dict[str, float]:
    """Cumulative import seconds of the modules a ``runbook run`` process loads, by -X importtime."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import runbook_lib.cli, runbook_lib.running.runner"],
        capture_output=True,
        text=True,
        cwd=paths.project_root(),
    )
    wanted = {
        "runbook_lib.running.runner",
        "runbook_lib.cli",
        "nbformat",
        "rfc3987_syntax",
        "pandas",
        "papermill",
        "nbconvert",
        "jupyter_client",
        "msal",
        "pydantic",
    }
    found: dict[str, float] = {}
    for line in result.stderr.splitlines():
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[2] in wanted and parts[1].isdigit():
            found[parts[2]] = max(found.get(parts[2], 0.0), int(parts[1]) / 1e6)
    return found


def median_table(title: str, samples: list[dict[str, float]], total: float | None = None) -> None:
    print(f"\n{title}")
    keys = sorted({k for s in samples for k in s}, key=lambda k: -statistics.median([s.get(k, 0.0) for s in samples]))
    for key in keys:
        values = [s.get(key, 0.0) for s in samples]
        share = f" {100 * statistics.median(values) / total:5.1f} %" if total else ""
        print(f"  {statistics.median(values):7.3f} s [{min(values):.3f}-{max(values):.3f}]{share}  {key}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cprofile", action="store_true", help="also one run under cProfile")
    parser.add_argument("--smoke", action="store_true", help="one cold run and its breakdown only (the test's)")
    args = parser.parse_args()
    if args.smoke:
        args.runs = 1
    instrument()
    with tempfile.TemporaryDirectory(prefix="runbook-profile-") as tmp:
        os.environ["RUNBOOK_STATE"] = str(Path(tmp) / "state")
        if not args.smoke:
            runner.run(contoso(Path(tmp) / "warm"), archive=Path(tmp) / "warm" / "archive", progress=lambda _: None)
        kit, cells, walls = [], [], []
        for i in range(args.runs):
            SPENT.clear()
            folder = Path(tmp) / f"run{i}"
            started = time.perf_counter()
            result = runner.run(contoso(folder), archive=folder / "archive", progress=lambda _: None)
            walls.append(time.perf_counter() - started)
            spent = dict(SPENT)
            times = cell_times(result.record)
            # the run's one kernel waits until ready inside Kernel.__enter__, never inside nbclient's execute
            ready = sum(spent.pop(k) for k in [k for k in list(spent) if k.startswith("wait_for_ready")])
            spent["kernel start (launch process)"] -= ready
            spent["kernel start (wait until ready: the kernel's own imports)"] = ready
            spent["nbclient execute"] -= sum(times.values())
            spent["cells in the kernel (below)"] = sum(times.values())
            spent["(rest: runner, locks, record folder, signals)"] = walls[-1] - sum(spent.values())
            kit.append(spent)
            cells.append(times)
        total = statistics.median(walls)
        warmth = "one cold run (smoke)" if args.smoke else f"{args.runs} runs after a warm-up (caches warm)"
        print(
            f"one in-process run of contoso (6 steps), {warmth}: wall {total:.2f} s [{min(walls):.2f}-{max(walls):.2f}]"
        )
        median_table(
            "kit side (wrapped functions; 'nbclient execute': what is left of it after the cells, i.e. messaging):",
            kit,
            total,
        )
        steps = [
            {f"step {k[:2]} (all its cells)": sum(v for c, v in run.items() if c[:2] == k[:2]) for k in run}
            for run in cells
        ]
        median_table("kernel side, per step (sum of its cells):", steps, total)
        top = sorted(cells[0], key=lambda k: -statistics.median([run.get(k, 0.0) for run in cells]))[:8]
        median_table(
            "kernel side, the slowest cells (execute_input to execute_reply):",
            [{k: run.get(k, 0.0) for k in top} for run in cells],
            total,
        )
        small = [[v for v in run.values() if v < 0.015] for run in cells]
        print(
            f"  {statistics.median(len(s) for s in small)} cells under 15 ms each take "
            f"{statistics.median(sum(s) for s in small):.3f} s together (the per-cell cost of IPython and nbclient)"
        )
        if args.smoke:
            return
        imports = [kernel_imports() for _ in range(args.runs)]
        loaded = {run.pop("(nbformat loaded)", 0.0) for run in imports}  # a flag, not seconds
        median_table("kernel-side imports in a fresh kernel, incremental, in notebook order:", imports)
        print(f"  nbformat loaded in the kernel by these imports: {'yes' if loaded == {1.0} else 'no'}")
        git = []
        for _ in range(args.runs):
            started = time.perf_counter()
            subprocess.run(["git", "rev-parse", "HEAD"], cwd=paths.project_root(), capture_output=True)
            git.append({"git rev-parse HEAD (once per process)": time.perf_counter() - started})
        median_table("git:", git)
        median_table(
            "imports of a `runbook run` process (cumulative, -X importtime):",
            [process_imports() for _ in range(args.runs)],
        )
        if args.cprofile:
            folder = Path(tmp) / "cprofile"
            profile = cProfile.Profile()
            profile.runcall(runner.run, contoso(folder), archive=folder / "archive", progress=lambda _: None)
            text = io.StringIO()
            pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(25)
            print("\ncProfile, one run, by own time (the main process mostly waits for the kernel in select/poll):")
            print(text.getvalue())


if __name__ == "__main__":
    main()
