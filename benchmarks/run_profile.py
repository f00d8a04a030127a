"""Where a command's CPU time goes, by process: `python benchmarks/run_profile.py OUT -- bash .ci/run`.

Runs the command and samples /proc every --interval seconds (Linux only): each process's own CPU
time (utime + stime, children not included) as last seen, grouped by a short label of its command
line; OUT gets the table, with the machine's totals from /proc/stat and /proc/vmstat over the run
(CPU, idle, I/O wait, GB read and written). A process shorter than the interval can be missed: the
table's sum is a floor of the machine's CPU total, which it prints beside it.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def label(argv: list[str], comm: str) -> str:
    """The program and its first two arguments that say what it runs (a module, a script, a -c snippet)."""
    if not argv:
        return f"[{comm}]"  # a kernel thread
    words = [a for a in argv[1:] if not a.startswith("-")][:2]
    if "-m" in argv[1:4]:
        i = argv.index("-m")
        words = argv[i:i + 3]  # the module and its first argument: `-m pip install`, `-m ci local`
    elif "-c" in argv[1:4]:
        i = argv.index("-c")
        words = ["-c", *(w.strip().splitlines()[0][:50] for w in argv[i + 1:i + 2] if w.strip())]
    return " ".join([Path(argv[0]).name, *(Path(w).name if "/" in w and len(w) > 40 else w[:60] for w in words)])


def snapshot() -> dict[tuple[str, str], tuple[str, float]]:
    """(pid, start time) -> (label, CPU seconds so far) for every process now."""
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        cpu = (int(fields[11]) + int(fields[12])) / TICK
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        out[(pid, fields[19])] = (label([a.decode(errors="replace") for a in argv], comm), cpu)
    return out


def machine() -> dict[str, int]:
    """CPU ticks (busy, idle, iowait) from /proc/stat and KiB paged in and out from /proc/vmstat."""
    user, nice, system, idle, iowait, *rest = (int(v) for v in Path("/proc/stat").read_text().split()[1:9])
    vm = dict(line.split() for line in Path("/proc/vmstat").read_text().splitlines())
    return {"busy": user + nice + system + sum(rest[:3]), "idle": idle, "iowait": iowait,
            "read": int(vm["pgpgin"]), "written": int(vm["pgpgout"])}


def profile(command: list[str], interval: float) -> tuple[int, float, dict, dict[str, list[float]]]:
    """Run command while sampling: (exit code, seconds, machine deltas, label -> CPU seconds of each process)."""
    before, start = machine(), time.monotonic()
    base = snapshot()  # processes already running count only what they use from now on
    last: dict[tuple[str, str], tuple[str, float]] = {}
    proc = subprocess.Popen(command)
    while proc.poll() is None:
        for key, (name, cpu) in snapshot().items():  # an exited process (a zombie) has no cmdline: keep its label
            last[key] = (last[key][0] if key in last and name.startswith("[") else name, cpu)
        time.sleep(interval)
    seconds, after = time.monotonic() - start, machine()
    by_label: dict[str, list[float]] = collections.defaultdict(list)
    for key, (name, cpu) in last.items():
        used = cpu - base[key][1] if key in base else cpu
        if used > 0:
            by_label[name].append(used)
    return proc.returncode, seconds, {k: after[k] - before[k] for k in after}, by_label


def table(code: int, seconds: float, delta: dict, by_label: dict[str, list[float]], command: list[str],
          top: int) -> str:
    ticks = delta["busy"] + delta["idle"] + delta["iowait"]
    sampled = sum(sum(v) for v in by_label.values())
    lines = [f"`{' '.join(command)}`: exit code {code}, {seconds:.0f} s; the machine: {delta['busy'] / TICK:.0f} CPU-s "
             f"busy, idle {100 * delta['idle'] / ticks:.0f} %, I/O wait {100 * delta['iowait'] / ticks:.0f} %, "
             f"{delta['read'] / 2**20:.1f} GiB read, {delta['written'] / 2**20:.1f} GiB written; the processes "
             f"sampled: {sampled:.0f} CPU-s", "", "| CPU-s | processes | command |", "|---:|---:|---|"]
    ranked = sorted(by_label.items(), key=lambda item: -sum(item[1]))
    lines += [f"| {sum(v):.1f} | {len(v)} | `{name}` |" for name, v in ranked[:top]]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("command", nargs="+")
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    code, seconds, delta, by_label = profile(args.command, args.interval)
    args.out.write_text(table(code, seconds, delta, by_label, args.command, args.top))
    return code


if __name__ == "__main__":
    sys.exit(main())
