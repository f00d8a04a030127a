"""Pipeline measurements: install time of our wheel vs building from the
sdist, wheel sizes, and compiles per release.

Run:  python3.11 -m ci bench --pipeline   (after `python3.11 -m ci local`, which makes wheelhouse/)
Prints the results and writes them to benchmarks/PIPELINE.md.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))

from ci.declaration import matrix  # noqa: E402
from ci.util import envs  # noqa: E402


def timed_install(base: envs.Env, target: Path, requirements: list[Path]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        env = envs.overlay_env(base, "bench", requirements, path=Path(tmp) / "env")
        start = time.perf_counter()
        env.pip("install", "--no-deps", "--no-build-isolation", "--no-index", str(target))
        return time.perf_counter() - start


def timed_pip_version(base: envs.Env) -> float:
    start = time.perf_counter()
    subprocess.run([str(base.python), "-m", "pip", "--version"], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    wheelhouse = ROOT / "wheelhouse"
    merged = next(wheelhouse.glob("*.whl"), None)
    if merged is None:
        sys.exit("run `python3.11 -m ci local` first (no wheel in wheelhouse/)")
    local = matrix.declaration().local
    base = envs.base_env(local.python, matrix.torch(local.torch[0]).pin)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "-o", tmp, str(ROOT)],
                       check=True, capture_output=True)
        sdist = next(Path(tmp).glob("*.tar.gz"))
        wheel_s = min(timed_install(base, merged, []) for _ in range(3))
        pip_s = min(timed_pip_version(base) for _ in range(3))
        sdist_s = timed_install(base, sdist, [envs.REQUIREMENTS / "build.txt"])
    lines = ["### Install: wheel vs sdist", "",
             f"`pip install --no-deps` into a fresh env over torch {base.path.name}, this machine "
             f"({os.cpu_count()} cores):", "",
             "| what | seconds |", "|---|---|",
             f"| final wheel ({merged.name}) | {wheel_s:.2f} |",
             f"| sdist ({sdist.name}, compiles the extension) | {sdist_s:.1f} |",
             f"| ratio | **{sdist_s / wheel_s:.0f}x** |",
             f"| (pip's own start-up, `pip --version`, included in both) | {pip_s:.2f} |", "",
             "### Wheel sizes", "", "| wheel | KiB |", "|---|---|"]
    for wheel in [merged]:
        lines.append(f"| {wheel.name} | {wheel.stat().st_size / 1024:.0f} |")
    plats, torches = matrix.platforms(), matrix.torches()
    naive = len(plats) * sum(len(t.python) for t in torches)
    builds = len(matrix.build_cells("release"))
    how = ("one stable-ABI build per platform, serving every torch from the floor" if matrix.abi() == "stable"
           else "one abi3 build per platform and torch")
    lines += ["", "### Compiles per release", "",
              f"ABI mode {matrix.abi()}: **{builds} builds** for {len(plats)} platforms x {len(torches)} torch minors "
              f"({how}, reused for every CPython); per-torch mode would need {len(plats) * len(torches)}, and a "
              f"build per (platform, CPython, torch) {naive}.", ""]
    text = "\n".join(["# Pipeline measurements", "", "Command: `python3.11 -m ci bench --pipeline` "
                      "(after `python3.11 -m ci local`).", "", *lines])
    print(text)
    (ROOT / "benchmarks" / "PIPELINE.md").write_text(text)


if __name__ == "__main__":
    main()
