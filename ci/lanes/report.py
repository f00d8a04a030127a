"""`report`: every (platform, CPython, torch) cell a release promises, with how
each was verified on this machine, from the records the lanes wrote.

Each lane writes `verification-<lane>.json` next to its wheels (one record per
cell it checked: platform, CPython or "*" for every CPython the wheel serves,
torch minor, method, result, date). The report joins them with the release
matrix of ci/declaration/matrix.toml; a cell no lane recorded is "only on GitHub runners".
Nothing in it is written by hand.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..declaration import matrix
from ..util.envs import ROOT

# Strongest first: a cell shows the strongest method that passed (else the strongest that ran).
GPU, NATIVE, SID, FREE_THREADED, QEMU, CIBW, CROSS, GITHUB = (
    "ran natively, CUDA kernels on a GPU (gpu-check)", "ran natively", "ran natively (in a Debian sid rootfs)",
    "ran natively (free-threaded)", "ran under qemu", "built by real cibuildwheel in a stand-in image (ran there)",
    "cross-built and repaired, not run", "only on GitHub runners")
METHODS = [GPU, NATIVE, SID, FREE_THREADED, QEMU, CIBW, CROSS, GITHUB]
CUDA_NOTE = ("CUDA kernels: a Linux cell verified here without a GPU ran the CPU kernels; the wheel's CUDA build "
             "was compiled, audited (architectures, dependencies) and loaded there under a CUDA build of torch, "
             "but its kernels ran only in cells marked as run on a GPU.")


@dataclass(frozen=True)
class Record:
    platform: str  # ci/declaration/matrix.toml name, e.g. linux-x86_64
    python: str  # "3.11", or "*" for every CPython the wheel serves (nothing ran)
    torch: str  # minor
    method: str
    result: str  # "passed" or "FAILED: ..."
    date: str = ""

    @property
    def passed(self) -> bool:
        return self.result.startswith("passed")


def write(out: Path, lane: str, records: list[Record]) -> Path:
    """Record what a lane verified (replacing that lane's earlier records in out)."""
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"verification-{lane}.json"
    path.write_text(json.dumps([asdict(r) | {"date": r.date or today} for r in records], indent=1) + "\n")
    return path


def collect(root: Path) -> list[Record]:
    return [Record(**entry) for path in sorted(root.rglob("verification-*.json"))
            for entry in json.loads(path.read_text())]


def cells(records: list[Record]) -> list[dict]:
    """The release matrix, each cell with its best record (or GitHub only)."""
    rows = []
    for cell in matrix.verify_cells("release"):
        found = [r for r in records if (r.platform, r.torch) == (cell["platform"], cell["torch"])
                 and r.python in (cell["python"], "*")]
        found.sort(key=lambda r: (not r.passed, METHODS.index(r.method)))
        best = found[0] if found else None
        rows.append({"platform": cell["platform"], "python": cell["python"], "torch": cell["torch"],
                     "method": best.method if best else GITHUB, "result": best.result if best else "-",
                     "date": best.date if best else "-",
                     "also": sorted({r.method for r in found[1:] if r.method != best.method})})
    return rows


def render(rows: list[dict]) -> str:
    counts = {m: sum(r["method"] == m for r in rows) for m in METHODS}
    lines = [f"{len(rows)} release cells: " + ", ".join(f"{n} {m}" for m, n in counts.items() if n), "",
             CUDA_NOTE, "", "| platform | CPython | torch | verified here | result | date |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        method = r["method"] + (f" (also: {', '.join(r['also'])})" if r["also"] else "")
        lines.append(f"| {r['platform']} | {r['python']} | {r['torch']} | {method} | {r['result']} | {r['date']} |")
    return "\n".join(lines)


def report(root: Path, doc: Path | None = None) -> str:
    """Print-ready Markdown; report.md and report.json are written into root (and, with doc, the
    documentation page: the same table with where it came from)."""
    rows = cells(collect(root))
    text = render(rows)
    root.mkdir(parents=True, exist_ok=True)
    (root / "report.md").write_text(text + "\n")
    (root / "report.json").write_text(json.dumps(rows, indent=1) + "\n")
    if doc:
        doc.write_text(page(root, doc, text))
    return text


def page(root: Path, doc: Path, text: str) -> str:
    """docs/verification.md: the report, the lanes it joins and the command that wrote it."""
    lanes = sorted(p.stem.removeprefix("verification-") for p in root.rglob("verification-*.json"))
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    shown = doc.resolve().relative_to(ROOT) if doc.resolve().is_relative_to(ROOT) else doc.name
    return (f"# What was verified where\n\nWritten by `python3.11 -m ci report --doc {shown}` on {today} from "
            f"the records of the lanes {', '.join(lanes) or '(none)'} (see [lanes.md](lanes.md)); not edited by "
            "hand. Each row names the strongest way its cell was verified on a development machine, and its "
            "date.\n\n" + text + "\n")
