"""Speed and memory of the kit, measured on this machine (offline, replay):

(a) one tenant's full run against the floor: papermill executing the same number of trivial notebooks
    with the same kernel, one after another (target: at most 1.3 times the floor);
(b) 20 demo tenants as a batch (``--jobs`` = cores) against the same 20 one after another (target: at least
    1.8 times faster on 2 cores), with the peak memory of the whole process tree;
(c) requests per scenario (reads, writes, retries): see requests_per_scenario.py, run at the end.

    .venv/bin/python benchmarks/speed.py
"""
from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

import nbformat
import papermill
import yaml

from runbook_lib import batch, params, paths, runner, secrets

import requests_per_scenario

DEMO = paths.project_root() / "params" / "demo"


def floor(count: int, folder: Path) -> float:
    """Seconds for papermill to run ``count`` one-cell notebooks with the kit's kernel, one after another."""
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": runner.kernel_name(), "language": "python",
                                                           "display_name": "kit"}, "language_info": {"name": "python"}})
    nb.cells = [nbformat.v4.new_code_cell("1 + 1")]
    source = folder / "trivial.ipynb"
    nbformat.write(nb, source)
    started = time.perf_counter()
    for i in range(count):
        papermill.execute_notebook(str(source), str(folder / f"out{i}.ipynb"), kernel_name=runner.kernel_name(),
                                   progress_bar=False)
    return time.perf_counter() - started


def one_tenant(folder: Path) -> float:
    loaded = params.load(DEMO / "contoso.yaml")
    raw = loaded.public() | {"secret_store": secrets.private_copy(loaded.secret_store, folder).model_dump(exclude_none=True)}
    started = time.perf_counter()
    runner.run(params.validate(raw), archive=folder / "archive", progress=lambda _: None)
    return time.perf_counter() - started


def tenants(count: int, folder: Path) -> list[str]:
    """``count`` distinct tenants replaying the demo tenants' recordings."""
    demos = sorted(DEMO.glob("*.yaml"))
    files = []
    for i in range(count):
        source = params.load(demos[i % len(demos)])
        raw = source.public()
        store = secrets.private_copy(source.secret_store, folder / "stores", f"{i}.secret")
        raw.update(tenant=f"{source.tenant}-{i}", recordings=source.recordings, secret_store=store.model_dump(exclude_none=True))
        path = folder / "params" / f"{source.tenant}-{i}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(raw))
        files.append(str(path))
    return files


class PeakMemory:
    """Samples the resident memory of this process and all its descendants (kernels), every 0.2 s."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree_rss(self) -> int:
        parents: dict[int, int] = {}
        rss: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(fields[1])
                rss[int(entry.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
            except (OSError, IndexError, ValueError):
                continue
        tree, frontier = {os.getpid()}, [os.getpid()]
        while frontier:
            pid = frontier.pop()
            children = [c for c, p in parents.items() if p == pid and c not in tree]
            tree.update(children)
            frontier.extend(children)
        return sum(rss.get(pid, 0) for pid in tree)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, self._tree_rss())

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def timed_batch(files: list[str], jobs: int, archive: Path) -> tuple[float, int]:
    with PeakMemory() as memory:
        started = time.perf_counter()
        batch.run_batch(files, jobs=jobs, archive=archive, progress=lambda _: None)
        return time.perf_counter() - started, memory.peak


def main() -> None:
    cores = os.cpu_count() or 2
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        steps = len(params.STEP_NAMES)
        base = floor(steps, folder)
        run = one_tenant(folder)
        print(f"(a) one tenant, {steps} steps: {run:.1f} s; floor ({steps} trivial notebooks): {base:.1f} s; "
              f"ratio {run / base:.2f} (target <= 1.3)")
        files = tenants(20, folder)
        serial, serial_peak = timed_batch(files, 1, folder / "serial")
        parallel, parallel_peak = timed_batch(files, cores, folder / "parallel")
        print(f"(b) 20 tenants: one after another {serial:.1f} s (peak {serial_peak / 2**20:.0f} MiB); "
              f"batch --jobs {cores} {parallel:.1f} s (peak {parallel_peak / 2**20:.0f} MiB); "
              f"speed-up {serial / parallel:.2f}x (target >= 1.8x on 2 cores)")
    print("(c) requests per scenario (step 2):")
    requests_per_scenario.main()


if __name__ == "__main__":
    main()
