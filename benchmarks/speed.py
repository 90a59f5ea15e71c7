"""Speed and memory of the kit on this machine, offline (the demo tenants replay their recordings).

    .venv/bin/python benchmarks/speed.py                 # every figure, 5 interleaved pairs each (~20 min)
    .venv/bin/python benchmarks/speed.py --quick --runs 2 --only a,d    # smoke run

Figures (each measured --runs times, interleaved with its floor: kit, floor, kit, floor, ...; wall time and
CPU time of the whole process tree, median [min-max]):

a   one tenant's six steps in this process (``runner.run`` on a private copy of contoso) vs papermill
    running six trivial one-cell notebooks with the kit's kernel in this process; after one warm-up pair
a'  the same as whole processes: ``runbook run`` vs ``python -c "import papermill; ..."``
b   20 tenants as ``runbook batch --jobs 2`` vs ``--jobs 1``; peak RSS of the batch's process tree / 2
c   requests per demo scenario (step 2, applied and planned): requests_per_scenario.py
d   ``html_record.render`` over every notebook of one run record (floor: ``nbformat.write`` of the same),
    after one warm-up pair; its share of a run

CPU time is user+sys: ``time.process_time`` plus ``RUSAGE_CHILDREN`` deltas. This process is made a child
subreaper so that processes a subprocess leaves behind (the batch's fork server) are reaped here and count.
Locks and token caches go to a temporary ``RUNBOOK_STATE``, so other people's runs cannot collide with these.
It reports; it does not judge: the exit code is 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import papermill
import requests_per_scenario
import yaml

from runbook_lib import paths
from runbook_lib.config import params, secrets
from runbook_lib.records import html_record
from runbook_lib.records import store as records
from runbook_lib.running import runner

DEMO = paths.project_root() / "params" / "demo"
BIN = Path(sys.executable).parent
FLOOR_CODE = (
    "import sys, papermill\nnb, out, kernel, count = sys.argv[1:]\nfor i in range(int(count)):\n"
    "    papermill.execute_notebook(nb, f'{out}/out{i}.ipynb', kernel_name=kernel, progress_bar=False)"
)


@dataclass
class Sample:
    wall: float
    cpu: float
    peak_rss: int = 0


@dataclass
class Pairs:
    """One figure: kit and floor samples, taken in turn."""

    kit: list[Sample] = field(default_factory=list)
    floor: list[Sample] = field(default_factory=list)


def children_cpu() -> float:
    """CPU seconds (user+sys) of every descendant reaped so far."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return kids.ru_utime + kids.ru_stime


def cpu_now() -> float:
    """CPU seconds of this process and every descendant it has reaped."""
    return time.process_time() + children_cpu()


def timed(work: Callable[[], object]) -> Sample:
    wall, cpu = time.perf_counter(), cpu_now()
    work()
    return Sample(time.perf_counter() - wall, cpu_now() - cpu)


def reap_orphans(timeout: float = 30.0) -> None:
    """Wait for descendants that outlived their parent (re-parented here): their CPU time then counts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitpid(-1, os.WNOHANG) == (0, 0):
                time.sleep(0.02)
        except ChildProcessError:
            return


class PeakRss(threading.Thread):
    """Peak of the summed VmRSS of ``root`` and all its descendants, sampled every 0.1 s from /proc."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root, self.peak, self.done = root, 0, threading.Event()
        self.parents: dict[int, int] = {}

    @staticmethod
    def _read(pid: int, name: str) -> str:
        try:
            return (Path("/proc") / str(pid) / name).read_text()
        except OSError:
            return ""

    def _ppid(self, pid: int) -> int:
        fields = self._read(pid, "stat").rsplit(")", 1)[-1].split()  # after the command name, which may hold spaces
        return int(fields[1]) if len(fields) > 1 else 0

    def sample(self) -> int:
        pids = [int(n) for n in os.listdir("/proc") if n.isdigit()]
        self.parents = {p: self.parents[p] if p in self.parents else self._ppid(p) for p in pids}
        tree, frontier = {self.root}, [self.root]
        while frontier:
            parent = frontier.pop()
            children = [p for p, pp in self.parents.items() if pp == parent and p not in tree]
            tree.update(children)
            frontier.extend(children)
        kib = 0
        for pid in tree:
            line = next((x for x in self._read(pid, "status").splitlines() if x.startswith("VmRSS:")), "VmRSS: 0 kB")
            kib += int(line.split()[1])
        return kib * 1024

    def run(self) -> None:
        while not self.done.wait(0.1):
            self.peak = max(self.peak, self.sample())


def process(command: list[str], log: Path, memory: bool = False) -> Sample:
    """A subprocess to its end (and its orphans), its tree's CPU time and, if asked, the peak RSS of its tree."""
    wall, cpu = time.perf_counter(), children_cpu()
    with log.open("ab") as err:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, cwd=paths.project_root())
        sampler = PeakRss(proc.pid)
        if memory:
            sampler.start()
        code = proc.wait()
    elapsed = time.perf_counter() - wall
    sampler.done.set()
    if memory:
        sampler.join()
    reap_orphans()
    if code not in (0, 1):  # 1: a demo scenario failed as designed; anything else is the benchmark's problem
        tail = "\n    ".join(log.read_text(errors="replace").splitlines()[-5:])
        print(f"  ! {' '.join(command[:3])} ... exited {code}:\n    {tail}")
    return Sample(elapsed, children_cpu() - cpu, sampler.peak)


@contextmanager
def stderr_to(log: Path) -> Iterator[None]:
    """The kernels this process starts inherit its stderr: send their start-up warnings to the log."""
    sys.stderr.flush()
    saved = os.dup(2)
    with log.open("ab") as err:
        os.dup2(err.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def interleave(runs: int, kit: Callable[[], Sample], floor: Callable[[], Sample], warm_up: bool = False) -> Pairs:
    if warm_up:
        kit(), floor()
    pairs = Pairs()
    for _ in range(runs):
        pairs.kit.append(kit())
        pairs.floor.append(floor())
    return pairs


def spread(values: list[float], unit: str = "", digits: int = 2) -> str:
    return f"{statistics.median(values):.{digits}f}{unit} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def show(name: str, floor_name: str, pairs: Pairs, invert: bool = False) -> list[float]:
    """Print both sides and the ratio per pair (kit/floor, or floor/kit when ``invert``); return the ratios."""
    for label, samples in ((name, pairs.kit), (floor_name, pairs.floor)):
        walls, cpus = spread([s.wall for s in samples], " s"), spread([s.cpu for s in samples], " s")
        print(f"  {label:<34} wall {walls}   cpu {cpus}")
    ratios = [(f.wall / k.wall) if invert else (k.wall / f.wall) for k, f in zip(pairs.kit, pairs.floor, strict=True)]
    cpu = [(f.cpu / k.cpu) if invert else (k.cpu / f.cpu) for k, f in zip(pairs.kit, pairs.floor, strict=True)]
    print(
        f"  {'per pair (wall)':<34} "
        + " ".join(f"{r:.2f}" for r in ratios)
        + f"   median {statistics.median(ratios):.2f}"
    )
    print(f"  {'per pair (cpu)':<34} " + " ".join(f"{r:.2f}" for r in cpu) + f"   median {statistics.median(cpu):.2f}")
    return ratios


class Bench:
    def __init__(self, folder: Path, quick: bool) -> None:
        self.folder, self.quick, self.count = folder, quick, 0
        self.source = params.load(DEMO / "contoso.yaml")
        self.steps = len(self.source.steps)
        self.log = folder / "stderr.log"
        self.trivial = folder / "trivial.ipynb"
        nb = nbformat.v4.new_notebook(
            metadata={
                "kernelspec": {"name": runner.kernel_name(), "language": "python", "display_name": "kit"},
                "language_info": {"name": "python"},
            }
        )
        nb.cells = [nbformat.v4.new_code_cell("1 + 1")]
        nbformat.write(nb, self.trivial)
        self.last_record: Path | None = None
        self.table: list[tuple[str, list[float], str, Callable[[float], bool] | None]] = []

    def fresh(self, name: str) -> Path:
        self.count += 1
        path = self.folder / f"{name}{self.count}"
        path.mkdir(parents=True)
        return path

    def private_params(self, folder: Path, tenant: str | None = None, source: params.Params | None = None) -> dict:
        """Public parameters of a demo tenant (contoso unless ``source``), its secret store copied into ``folder``."""
        source = source or self.source
        raw = source.public()
        store = secrets.private_copy(source.secret_store, folder / "store")
        raw.update(secret_store=store.model_dump(exclude_none=True), recordings=source.recordings)
        if tenant:
            raw["tenant"] = tenant
        return raw

    # (a) ------------------------------------------------------------------------------------------------
    def kit_in_process(self) -> Sample:
        folder = self.fresh("a-kit")
        run_params = params.validate(self.private_params(folder))
        result: list[runner.RunResult] = []
        sample = timed(
            lambda: result.append(runner.run(run_params, archive=folder / "archive", progress=lambda _: None))
        )
        self.last_record = result[0].record
        return sample

    def floor_in_process(self) -> Sample:
        out = self.fresh("a-floor")
        return timed(
            lambda: [
                papermill.execute_notebook(
                    str(self.trivial), str(out / f"out{i}.ipynb"), kernel_name=runner.kernel_name(), progress_bar=False
                )
                for i in range(self.steps)
            ]
        )

    def figure_a(self, runs: int) -> Pairs:
        print(f"(a) one tenant, {self.steps} steps, in this process (after one warm-up pair):")
        with stderr_to(self.log):
            pairs = interleave(runs, self.kit_in_process, self.floor_in_process, warm_up=True)
        ratios = show("kit: runner.run(contoso copy)", f"floor: papermill x{self.steps} trivial", pairs)
        print("  goal: <= 0.7")
        self.table += [
            ("(a) in-process kit/floor (wall)", ratios, "<= 0.7", lambda r: r <= 0.7),
            ("(a) kit run, wall s", [s.wall for s in pairs.kit], "", None),
            ("(a) floor, wall s", [s.wall for s in pairs.floor], "", None),
        ]
        return pairs

    # (a') -----------------------------------------------------------------------------------------------
    def kit_process(self) -> Sample:
        folder = self.fresh("a2-kit")
        (folder / "contoso.yaml").write_text(yaml.safe_dump(self.private_params(folder)))
        return process(
            [str(BIN / "runbook"), "run", str(folder / "contoso.yaml"), "--archive", str(folder / "archive")], self.log
        )

    def floor_process(self) -> Sample:
        out = self.fresh("a2-floor")
        return process(
            [sys.executable, "-c", FLOOR_CODE, str(self.trivial), str(out), runner.kernel_name(), str(self.steps)],
            self.log,
        )

    def figure_a2(self, runs: int) -> None:
        print(f"(a') one tenant, {self.steps} steps, as whole processes:")
        ratios = show(
            "kit: runbook run",
            f"floor: python -c papermill x{self.steps}",
            interleave(runs, self.kit_process, self.floor_process),
        )
        print("  goal: <= 0.7")
        self.table.append(("(a') processes kit/floor (wall)", ratios, "<= 0.7", lambda r: r <= 0.7))

    # (b) ------------------------------------------------------------------------------------------------
    def tenants(self, count: int) -> list[str]:
        """``count`` distinct tenants replaying the demo tenants' recordings (each demo's tenant ID: copies of
        one demo are a whole demo list apart, so they never run at the same time)."""
        demos = sorted(DEMO.glob("*.yaml"))
        folder = self.folder / "tenants"
        files = []
        for i in range(count):
            source = params.load(demos[i % len(demos)])
            raw = self.private_params(folder / str(i), f"{source.tenant}-{i}", source)
            path = folder / f"{source.tenant}-{i}.yaml"
            path.write_text(yaml.safe_dump(raw))
            files.append(str(path))
        return files

    def figure_b(self, runs: int) -> None:
        count = 4 if self.quick else 20
        files = self.tenants(count)

        def batch(jobs: int) -> Callable[[], Sample]:
            return lambda: process(
                [str(BIN / "runbook"), "batch", *files, "--jobs", str(jobs), "--archive", str(self.fresh(f"b{jobs}"))],
                self.log,
                memory=True,
            )

        print(f"(b) {count} tenants, runbook batch --jobs 2 vs --jobs 1 (peak RSS of the tree, sampled every 0.1 s):")
        pairs = interleave(runs, batch(2), batch(1))
        speedups = show("kit: batch --jobs 2", "floor: batch --jobs 1", pairs, invert=True)
        per_tenant = [s.peak_rss / 2 / 2**20 for s in pairs.kit]
        print(
            f"  peak RSS --jobs 2: {spread([s.peak_rss / 2**20 for s in pairs.kit], ' MiB', 0)}, per concurrent tenant "
            f"{spread(per_tenant, ' MiB', 0)}; --jobs 1: {spread([s.peak_rss / 2**20 for s in pairs.floor], ' MiB', 0)}"
        )
        print("  goal: speed-up >= 1.9x; <= 250 MiB per concurrent tenant")
        self.table += [
            (f"(b) speed-up, {count} tenants", speedups, ">= 1.9", lambda r: r >= 1.9),
            ("(b) peak MiB per concurrent tenant", per_tenant, "<= 250", lambda r: r <= 250),
        ]

    # (c) ------------------------------------------------------------------------------------------------
    def figure_c(self) -> None:
        print("(c) requests per demo scenario, step 2 (reads/writes include their retries):")
        with stderr_to(self.log):
            table = requests_per_scenario.table(limit=3 if self.quick else None)
        print("  " + table.to_string(index=False).replace("\n", "\n  "))

    # (d) ------------------------------------------------------------------------------------------------
    def figure_d(self, runs: int, run_wall: float | None) -> None:
        source = "median of (a)"
        if self.last_record is None or run_wall is None:
            with stderr_to(self.log):
                run_wall, source = self.kit_in_process().wall, "one in-process run"
        assert self.last_record is not None
        notebooks = [(p.stem, nbformat.read(p, as_version=4)) for p in sorted(self.last_record.glob("*.ipynb"))]
        header = records.header_so_far(self.last_record)
        real = self.source.mode in records.REAL_TENANT_MODES
        pages = [
            (
                nb,
                f"{self.source.mode.upper()}: {name}",
                html_record.summary_html(runner.step_record(nb, name), header, real_tenant=real),
            )
            for name, nb in notebooks
        ]
        out = self.fresh("d")
        pairs = interleave(
            runs,
            lambda: timed(lambda: [html_record.render(nb, title=t, summary_html=s) for nb, t, s in pages]),
            lambda: timed(lambda: [nbformat.write(nb, out / f"{i}.ipynb") for i, (nb, _, _) in enumerate(pages)]),
            warm_up=True,
        )
        print(f"(d) HTML of one run record ({len(pages)} notebooks):")
        show("kit: html_record.render", "floor: nbformat.write", pairs)
        shares = [100 * s.wall / run_wall for s in pairs.kit]
        print(f"  share of a run ({run_wall:.2f} s, {source}): {spread(shares, ' %', 1)}")
        self.table += [
            ("(d) render all notebooks, wall s", [s.wall for s in pairs.kit], "", None),
            ("(d) render, % of a run", shares, "", None),
        ]

    def summary(self) -> None:
        print(f"\n{'figure':<38} {'median':>8} {'min-max':>15}  {'goal':<7} met")
        for name, values, goal, met in self.table:
            median = statistics.median(values)
            print(
                f"{name:<38} {median:>8.2f} {f'{min(values):.2f}-{max(values):.2f}':>15}  {goal or '-':<7} "
                f"{'-' if met is None else 'yes' if met(median) else 'no'}"
            )


def checkout() -> str:
    """The kit's commit, and whether its files differ from it: others may commit while this runs."""

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=paths.project_root(), capture_output=True, text=True)

    dirty = git("diff", "--quiet", "HEAD", "--", "runbook_lib", "notebooks", "pyproject.toml").returncode
    return (git("rev-parse", "--short", "HEAD").stdout.strip() or "unknown") + (
        " + uncommitted changes" if dirty else ""
    )


def machine() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"machine: {os.cpu_count()} cores, load average {load} (1, 5, 15 min), Python {platform.python_version()}, "
        f"kernel {runner.kernel_name()}, kit at {checkout()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="interleaved pairs per figure (default 5)")
    parser.add_argument("--quick", action="store_true", help="4 tenants in (b), 3 scenarios in (c): a smoke run")
    parser.add_argument("--only", default="a,a',b,c,d", help="figures to run, e.g. a,d (default: a,a',b,c,d)")
    args = parser.parse_args()
    only = {f.strip() for f in args.only.split(",")}
    print(machine())
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans are reaped here
    with tempfile.TemporaryDirectory(prefix="runbook-bench-") as tmp:
        os.environ["RUNBOOK_STATE"] = str(Path(tmp) / "state")
        bench = Bench(Path(tmp), args.quick)
        run_wall = None
        if "a" in only:
            run_wall = statistics.median(s.wall for s in bench.figure_a(args.runs).kit)
        if "a'" in only:
            bench.figure_a2(args.runs)
        if "b" in only:
            bench.figure_b(args.runs)
        if "c" in only:
            bench.figure_c()
        if "d" in only:
            bench.figure_d(args.runs, run_wall)
        bench.summary()
    print(f"at the end: load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}, kit at {checkout()}")


if __name__ == "__main__":
    main()
