"""Where a command's CPU time and disk reads go, by process: `python benchmarks/run_profile.py OUT -- bash .ci/run`.

Runs the command and samples /proc every --interval seconds (Linux only): each process's own CPU
time (utime + stime, children not included) and the bytes it made the kernel read from storage
(`read_bytes` of /proc/PID/io: page faults on mapped files too, not what the page cache served; the
kernel adds a reaped child's to its parent's, so each child seen is taken off its parent's) as
last seen, grouped by a short label of its command line. OUT gets two tables (by CPU, by reads)
and the machine's totals from /proc/stat and /proc/vmstat over the run (CPU, idle, I/O wait, steal, GB
read and written). A process shorter than the interval can be missed: the tables' sums are floors
of the machine's totals, which they are printed beside.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

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


class Use(NamedTuple):
    cpu: float  # seconds
    read: int  # bytes from storage, with those of the children it reaped
    parent: str  # pid


def snapshot() -> dict[tuple[str, str], tuple[str, Use]]:
    """(pid, start time) -> (label, what it used so far) for every process now."""
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
            io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
        except OSError:  # gone meanwhile (or not ours to read)
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        cpu = (int(fields[11]) + int(fields[12])) / TICK
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        name = label([a.decode(errors="replace") for a in argv], comm)
        out[(pid, fields[19])] = (name, Use(cpu, int(io["read_bytes"]), fields[1]))
    return out


def machine() -> dict[str, int]:
    """CPU ticks (busy: user and system; idle, iowait, and steal: what the hypervisor gave to others)
    from /proc/stat and KiB paged in and out from /proc/vmstat."""
    ticks = (int(v) for v in Path("/proc/stat").read_text().split()[1:9])
    user, nice, system, idle, iowait, irq, softirq, steal = ticks
    vm = dict(line.split() for line in Path("/proc/vmstat").read_text().splitlines())
    return {"busy": user + nice + system + irq + softirq, "user": user + nice, "idle": idle, "iowait": iowait,
            "steal": steal, "read": int(vm["pgpgin"]), "written": int(vm["pgpgout"])}


def profile(command: list[str], interval: float) -> tuple[int, float, dict, dict[str, list[Use]]]:
    """Run command while sampling: (exit code, seconds, machine deltas, label -> what each process used)."""
    before, start = machine(), time.monotonic()
    base = snapshot()  # processes already running count only what they use from now on
    last: dict[tuple[str, str], tuple[str, Use]] = {}
    proc = subprocess.Popen(command)
    while proc.poll() is None:
        for key, (name, use) in snapshot().items():  # an exited process (a zombie) has no cmdline: keep its label
            last[key] = (last[key][0] if key in last and name.startswith("[") else name, use)
        time.sleep(interval)
    seconds, after = time.monotonic() - start, machine()
    children: dict[str, int] = collections.Counter()
    for key, (_, use) in last.items():
        if key not in base:
            children[use.parent] += use.read
    by_label: dict[str, list[Use]] = collections.defaultdict(list)
    for key, (name, use) in last.items():
        old = base[key][1] if key in base else Use(0.0, 0, "")
        use = Use(use.cpu - old.cpu, max(0, use.read - old.read - children[key[0]]), use.parent)
        if use.cpu > 0 or use.read > 0:
            by_label[name].append(use)
    return proc.returncode, seconds, {k: after[k] - before[k] for k in after}, by_label


def table(code: int, seconds: float, delta: dict, by_label: dict[str, list[Use]], command: list[str],
          top: int) -> str:
    ticks = delta["busy"] + delta["idle"] + delta["iowait"] + delta["steal"]
    cpu = {name: sum(u.cpu for u in uses) for name, uses in by_label.items()}
    read = {name: sum(u.read for u in uses) / 2**30 for name, uses in by_label.items()}
    sampled = sum(cpu.values())
    lines = [f"`{' '.join(command)}`: exit code {code}, {seconds:.0f} s; the machine: {delta['busy'] / TICK:.0f} CPU-s "
             f"busy ({delta['user'] / TICK:.0f} user), idle {100 * delta['idle'] / ticks:.0f} %, "
             f"I/O wait {100 * delta['iowait'] / ticks:.0f} %, steal {100 * delta['steal'] / ticks:.0f} %, "
             f"{delta['read'] / 2**20:.1f} GiB read, {delta['written'] / 2**20:.1f} GiB written; the processes "
             f"sampled: {sampled:.0f} CPU-s, {sum(read.values()):.1f} GiB read"]
    for title, key in (("by CPU", cpu), ("by reads from storage", read)):
        lines += ["", f"{title}:", "", "| CPU-s | GiB read | processes | command |", "|---:|---:|---:|---|"]
        ranked = sorted(by_label, key=lambda name: -key[name])[:top]
        lines += [f"| {cpu[n]:.1f} | {read[n]:.2f} | {len(by_label[n])} | `{n}` |" for n in ranked if key[n] > 0]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("command", nargs="+")
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    code, seconds, delta, by_label = profile(args.command, args.interval)
    args.out.write_text(table(code, seconds, delta, by_label, args.command, args.top))
    return code


if __name__ == "__main__":
    sys.exit(main())
