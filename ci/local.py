"""`local`: the whole pipeline for this machine's platform and the torch
builds at hand (ci/matrix.toml [local]): build -> repair -> audit -> merge ->
audit -> smoke every (python, torch) cell. Writes wheelhouse/ and prints a
summary table as it goes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from . import audit, build, envs, matrix, merge, repair, smoke
from .envs import ROOT
from .wheels import WheelInfo


@dataclass
class Row:
    cell: str
    wheel: str = ""
    tag: str = ""
    size: str = ""
    result: str = ""
    seconds: float = 0.0


class Progress:
    def __init__(self, total: int):
        self.rows: list[Row] = []
        self.total = total

    def step(self, cell: str, action):
        """Run action() -> (wheel path or None, result text); record and print a row."""
        print(f"[{len(self.rows) + 1}/{self.total}] {cell} ...", flush=True)
        start = time.perf_counter()
        try:
            wheel, result = action()
        except (SystemExit, Exception) as error:  # recorded, then the run stops
            wheel, result = None, f"FAILED: {error}"
        row = Row(cell, result=result, seconds=time.perf_counter() - start)
        if wheel:
            info = WheelInfo.read(wheel)
            row.wheel, row.tag, row.size = wheel.name, str(next(iter(info.tags))), f"{info.size / 1024:.0f} KiB"
        self.rows.append(row)
        print(f"      {row.result} ({row.seconds:.1f} s)", flush=True)
        if result.startswith("FAILED"):
            raise SystemExit(self.table())
        return wheel

    def table(self) -> str:
        head = ["cell", "wheel", "tag", "size", "result", "seconds"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.rows:
            result = r.result.splitlines()[0] if r.result else ""
            lines.append(f"| {r.cell} | {r.wheel} | {r.tag} | {r.size} | {result} | {r.seconds:.1f} |")
        return "\n".join(lines)


def audited(wheel: Path) -> tuple[Path, str]:
    problems = audit.audit(wheel)
    if problems:
        raise SystemExit("audit failed:\n" + "\n".join(problems))
    return wheel, "passed"


def smoked(wheel: Path, python: str, pin: str) -> tuple[None, str]:
    result = smoke.smoke(wheel, python, pin)
    if not result.ok:
        raise SystemExit(result.output)
    return None, result.output.splitlines()[0]


def run(out: Path = ROOT / "wheelhouse", minors: list[str] | None = None) -> str:
    local = matrix.load()["local"]
    python, minors = local["python"], minors or local["torch"]
    torches = [matrix.torch(m) for m in minors]
    progress = Progress(total=3 * len(torches) + 2 + len(torches))
    per_torch_dir = out / "per-torch"
    for stale in [*out.glob("*.whl"), *per_torch_dir.glob("*.whl")]:
        stale.unlink()
    repaired, dist = [], out / "build"
    for t in torches:
        built = progress.step(f"build torch {t.minor}", lambda t=t: (build.build(t.minor, dist, python), "built"))
        lib_dir = envs.base_env(python, t.pin).site_packages / "torch" / "lib"
        fixed = progress.step(f"repair torch {t.minor}",
                              lambda b=built, d=lib_dir: (repair.repair(b, per_torch_dir, lib_dir=d), "repaired"))
        progress.step(f"audit torch {t.minor}", lambda w=fixed: audited(w))
        repaired.append(fixed)
    merged = progress.step("merge", lambda: (merge.merge(repaired, out), f"{len(repaired)} builds"))
    progress.step("audit merged", lambda: audited(merged))
    for t in torches:
        progress.step(f"smoke cp{python} torch {t.pin}", lambda t=t: smoked(merged, python, t.pin))
    tag = next(iter(WheelInfo.read(merged).tags)).platform
    return (progress.table() + f"\n\nFinal wheel: {merged}\nReached {tag} on this machine (glibc here is newer); "
            "CI builds in the manylinux_2_28 container and reaches manylinux_2_28.")
