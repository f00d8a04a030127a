"""`local`: the whole pipeline for this machine's platform and the torch
builds at hand (ci/declaration/matrix.toml [local]): build -> repair -> audit (-> merge ->
audit, per-torch mode) -> smoke every (python, torch) cell. In stable mode the
one build (against [package] build_torch) is the final wheel. Writes
wheelhouse/ and prints a summary table as it goes."""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..declaration import matrix
from ..errors import CheckFailed, PipelineError
from ..stages import audit, build, merge, repair, smoke
from ..stages.build import source_date_epoch
from ..stages.wheels import WheelInfo
from ..util.envs import ROOT
from . import report


@dataclass
class Row:
    cell: str
    wheel: str = ""
    tag: str = ""
    size: str = ""
    result: str = ""
    seconds: float = 0.0


LOG = "local.log"  # next to the wheels: each step's full output (the table says passed / FAILED)
STEP = "---- step: {} ----"


class Progress:
    def __init__(self, total: int, log: Path):
        self.rows: list[Row] = []
        self.total = total
        self.log = log
        log.write_text("")

    def step(self, cell: str, action):
        """Run action() -> (wheel path or None, result text); record and print a row."""
        print(f"[{len(self.rows) + 1}/{self.total}] {cell} ...", flush=True)
        start, failure = time.perf_counter(), None
        try:
            wheel, result = action()
        except Exception as error:  # recorded, then the run stops (chained: --debug shows where)
            wheel, result, failure = None, f"FAILED: {error}", error
        row = Row(cell, result=result, seconds=time.perf_counter() - start)
        if wheel:
            info = WheelInfo.read(wheel)
            row.wheel, row.tag, row.size = wheel.name, str(next(iter(info.tags))), f"{info.size / 1024:.0f} KiB"
        self.rows.append(row)
        with self.log.open("a") as log:
            log.write(f"{STEP.format(cell)}\n{result}\n\n")
        print(f"      {result.splitlines()[0] if result else ''} ({row.seconds:.1f} s)", flush=True)
        if result.startswith("FAILED"):
            raise CheckFailed(f"{self.table()}\n\n{cell}: {result[:4000]}\n(all steps: {self.log})") from failure
        return wheel

    def table(self) -> str:
        head = ["cell", "wheel", "tag", "size", "result", "seconds"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.rows:
            result = "FAILED" if r.result.startswith("FAILED") else "passed"
            lines.append(f"| {r.cell} | {r.wheel} | {r.tag} | {r.size} | {result} | {r.seconds:.1f} |")
        return "\n".join(lines)


def read_log(out: Path) -> dict[str, str]:
    """What each step of the last run into out said (cell -> its output), from out/local.log."""
    parts = re.split(r"^---- step: (.+) ----$", (out / LOG).read_text(), flags=re.MULTILINE)[1:]
    return {cell: text.strip() for cell, text in zip(parts[::2], parts[1::2])}


def audited(wheel: Path) -> tuple[Path, str]:
    problems = audit.audit(wheel)
    if problems:
        raise CheckFailed("audit failed:\n" + "\n".join(problems))
    return wheel, "passed"


def smoked(wheel: Path, python: str, pin: str, op_tests: bool = False) -> tuple[None, str]:
    result = smoke.smoke(wheel, python, pin, op_tests)
    if not result.ok:
        raise CheckFailed(result.output)
    return None, result.output.splitlines()[0]


def run(out: Path = ROOT / "wheelhouse", minors: list[str] | None = None, arch: str = "native",
        cells: str = "local", final: Path | None = None) -> str:
    local = matrix.declaration().local
    if cells == "matrix":
        return run_matrix(out, final)
    if cells == "newest":
        return run_newest(out, final)
    if arch == "aarch64":
        return run_aarch64(out, minors or local.aarch64_torch)
    if arch == "macos-arm64":
        return run_macos(out, minors or local.macos_torch)
    torches = [matrix.torch(m) for m in minors or local.torch]
    return run_native(out, matrix.builds_for(torches), [(local.python, t) for t in torches], "native",
                      "Reached {tag} on this machine (glibc here is newer); CI builds in the manylinux_2_28 "
                      "container and reaches manylinux_2_28.")


def run_matrix(out: Path, final: Path | None = None) -> str:
    """The final wheel (stable: the one build; per-torch: a build for every declared torch), tested in
    every cell of matrix.local_matrix_cells() (torch not on disk comes from the registry): in stable
    mode each cell runs the op test suite against the same wheel file, not only the smoke check.
    final: a stable wheel `local` already built, repaired and audited on this machine, tested as is."""
    return run_native(out, matrix.builds_for(matrix.torches()), matrix.local_matrix_cells(), "native-matrix",
                      "Reached {tag} on this machine; every cell above ran natively here (CUDA builds of torch "
                      "from the registry run on the CPU).", op_tests=matrix.abi() == matrix.STABLE, final=final)


def native_build(python: str) -> dict:
    """pipeline()'s build and lib_dir for a wheel built here on CPython `python`."""
    return {"build": lambda t, dist: build.build(t.minor, dist, python),
            "lib_dir": lambda t: build.torch_base(python, t.pin).site_packages / "torch" / "lib"}


def run_newest(out: Path, final: Path | None = None) -> str:
    """The final wheel's op test suite under CPython 3.14/3.15 (Debian sid's, in a rootfs) and a
    free-threaded CPython built here (ci/lanes/newest.py), each with the oldest and newest torch for it."""
    from . import newest

    why = newest.unavailable()
    if why:
        raise PipelineError(f"local --newest: {why}")
    python = matrix.declaration().local.python

    def tested(wheel: Path, cell: newest.Cell) -> tuple[None, str]:
        ok, output = newest.run_cell(cell, wheel)
        if not ok:
            raise CheckFailed(output)
        return None, output.splitlines()[0]

    def prepare() -> tuple[None, str]:
        pythons = [str(newest.free_threaded_python(v)) for v in matrix.declaration().local.free_threaded_python]
        return None, f"{newest.prepare_rootfs()}; {', '.join(pythons)}"

    return pipeline(
        out, matrix.builds_for(matrix.torches()),
        **native_build(python),
        smoke_cells=[(c.label, lambda w, c=c: tested(w, c), c.python, c.torch.minor) for c in newest.cells()],
        lane=("newest-python", "linux-x86_64",
              lambda py: report.FREE_THREADED if py.endswith("t") else report.SID),
        note="Reached {tag} on this machine; the cells above ran natively: CPython 3.14/3.15 are Debian sid's "
             "(chroot into a sid rootfs), 3.13t was built here from Debian's CPython source with --disable-gil.",
        prepare=("prepare the sid rootfs and the free-threaded CPython", prepare),
        final=final, parallel=min(2, os.cpu_count() or 1),
    )


def run_native(out: Path, torches: list[matrix.Torch], cells: list[tuple[str, matrix.Torch]], lane: str,
               note: str, op_tests: bool = False, final: Path | None = None) -> str:
    """Build each of torches on [local] python here, then test the final wheel in each (CPython, torch) cell."""
    python = matrix.declaration().local.python
    what = "op tests" if op_tests else "smoke"
    return pipeline(
        out, torches,
        **native_build(python),
        smoke_cells=[(f"{what} cp{py} torch {t.pin}", lambda w, py=py, t=t: smoked(w, py, t.pin, op_tests), py,
                      t.minor) for py, t in cells],
        lane=(lane, "linux-x86_64", report.NATIVE),
        note=note,
        final=final,
        parallel=min(2, os.cpu_count() or 1) if op_tests else 1,  # the op suites are mostly one busy core each
    )


def run_aarch64(out: Path, minors: list[str]) -> str:
    from . import aarch64

    aarch64.check_host()
    torches = [matrix.torch(m) for m in minors]

    def emulated_smoke(wheel: Path, t: matrix.Torch):
        ok, output = aarch64.smoke(wheel, t.minor)
        if not ok:
            raise CheckFailed(output)
        return None, output.splitlines()[0] + " | " + output.splitlines()[1]

    return pipeline(
        out, matrix.builds_for(torches),
        build=lambda t, dist: aarch64.build(t.minor, dist),
        lib_dir=lambda t: aarch64.torch_site(t.pin) / "torch" / "lib",
        smoke_cells=[(f"smoke cp{aarch64.PYTHON} torch {t.pin} (qemu)", lambda w, t=t: emulated_smoke(w, t),
                      aarch64.PYTHON, t.minor) for t in torches],
        lane=("aarch64-qemu", "linux-aarch64", report.QEMU),
        note="Reached {tag}: built against Debian bookworm's glibc in an emulated arm64 rootfs (CI's "
             "manylinux_2_28 container on a native arm runner reaches manylinux_2_28). Built and tested under "
             "qemu-user emulation, not on arm64 hardware.",
        prepare=("prepare arm64 rootfs", lambda: (None, str(aarch64.prepare_rootfs()))),
    )


def run_macos(out: Path, minors: list[str]) -> str:
    from . import macos

    torches = matrix.builds_for([matrix.torch(m) for m in minors])
    with macos.delocate_tools():
        return pipeline(
            out, torches,
            build=lambda t, dist: macos.build_wheel(t.minor, dist),
            lib_dir=lambda t: macos.torch_tree(t.pin) / "torch" / "lib",
            smoke_cells=[],
            lane=("macos-cross", macos.PLATFORM, report.CROSS),
            note="Reached {tag}: cross-built on Linux with zig against the macOS torch wheels, linked to the "
                 "system libc++, repaired with delocate (LLVM's otool/install_name_tool) and audited here. "
                 "NOT run: no Mac here; the macOS runners of the workflows run it.",
            platform="darwin",
        )


def record_result(row_result: str) -> str:
    """What the report says of a smoke cell: passed (with the smoke's bracketed note, e.g. that only the CPU
    kernels ran because torch's CUDA major has no build) or the failure's first line."""
    first = row_result.splitlines()[0] if row_result else ""
    if first.startswith("FAILED"):
        return first
    note = re.search(r" \[([^\]]+)\]", first)
    return f"passed: {note[1]}" if note else "passed"


def pipeline(out: Path, torches: list[matrix.Torch], build, lib_dir, smoke_cells, note: str, lane,
             prepare=None, platform: str = sys.platform, final: Path | None = None, parallel: int = 1) -> str:
    """build -> repair -> audit per torch (per-torch mode: then merge -> audit; stable mode: the one
    build is final), then every smoke cell; returns the table. lane = (name, platform, method): what
    each smoke cell (label, action, CPython, torch minor) records for the report; a lane without
    smoke cells records its audited wheel, not run. parallel: how many smoke cells run at once (the
    table keeps their order; a cell's seconds are those it was waited for)."""
    stable = matrix.abi() == matrix.STABLE
    if final and not stable:
        raise CheckFailed("local: an already built final wheel is only reused in stable mode")
    out.mkdir(parents=True, exist_ok=True)
    builds = 2 if final else 3 * len(torches) + (0 if stable else 2)
    progress = Progress(total=builds + len(smoke_cells) + bool(prepare), log=out / LOG)
    per_torch_dir = out / "per-torch"
    for stale in [*out.glob("*.whl"), *per_torch_dir.glob("*.whl")]:
        stale.unlink()
    name, platform_name, method = lane
    records: list[report.Record] = []
    try:
        if prepare:
            progress.step(*prepare)
        repaired, dist = [], out / "build"
        if final:
            copied = progress.step("the final wheel, already built", lambda: (
                Path(shutil.copy2(final, out)), f"reused {final} (built and repaired by `local`)"))
            repaired.append(progress.step("audit the final wheel", lambda: audited(copied)))
        for t in torches if not final else []:
            built = progress.step(f"build torch {t.minor}", lambda t=t: (build(t, dist), "built"))
            fixed = progress.step(f"repair torch {t.minor}", lambda b=built, t=t: (
                repair.repair(b, out if stable else per_torch_dir, lib_dir=lib_dir(t), platform=platform,
                              epoch=source_date_epoch()),
                "repaired"))
            progress.step(f"audit torch {t.minor}", lambda w=fixed: audited(w))
            repaired.append(fixed)
        if stable:
            (merged,) = repaired
        else:
            merged = progress.step("merge", lambda: (merge.merge(repaired, out), f"{len(repaired)} build(s)"))
            progress.step("audit merged", lambda: audited(merged))
        with ThreadPoolExecutor(max_workers=parallel) as pool:  # each cell is its own env and processes
            futures = [pool.submit(action, merged) for _, action, _, _ in smoke_cells]
            try:
                for (cell, _, python, minor), future in zip(smoke_cells, futures):
                    try:
                        progress.step(cell, future.result)
                    finally:
                        result = progress.rows[-1].result
                        how = method(python) if callable(method) else method
                        records.append(report.Record(platform_name, python, minor, how, record_result(result)))
            finally:
                for future in futures:
                    future.cancel()
        if not smoke_cells:
            served = matrix.torches() if stable else torches
            records += [report.Record(platform_name, "*", t.minor, method, "passed: built, repaired, audited")
                        for t in served]
    finally:
        report.write(out, name, records)
    tag = next(iter(WheelInfo.read(merged).tags)).platform
    return progress.table() + f"\n\nFinal wheel: {merged} (each step's output: {out / LOG})\n" + note.format(tag=tag)
