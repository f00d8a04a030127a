"""The benchmark script runs (tiny shapes; nothing is timed or asserted on speed)."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_ops.py"


def test_quick_benchmark_runs(tmp_path):
    out = tmp_path / "results.md"
    subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)], check=True, cwd=tmp_path,
                   capture_output=True)
    text = out.read_text()
    for op in ("sum", "mean", "max", "gather", "softmax"):
        assert f"### {op}" in text
    assert "segment sum vs memory copy" in text


def test_quick_gpu_benchmark_runs_on_the_cpu(tmp_path):
    """bench_gpu.py's tables and alternatives (on the CPU here: the GPU check runs it on a GPU)."""
    out = tmp_path / "gpu.md"
    subprocess.run([sys.executable, str(SCRIPT.with_name("bench_gpu.py")), "--quick", "--device", "cpu", "--out",
                    str(out)], check=True, cwd=tmp_path, capture_output=True)
    text = out.read_text()
    for op in ("sum", "mean", "max", "gather", "softmax"):
        assert f"### {op}" in text
    assert "segment sum / max vs a device-to-device copy" in text and "GPU: none (cpu" in text


def test_every_instruction_count_case_runs(tmp_path):
    """count_instructions.py's cases (run here without valgrind, once each), through its main() in one
    process: torch is imported once, not once per case."""
    cases = [[case, "1"] for case in ("reduce", "max_bwd", "gather_bwd", "softmax_bwd", "torch_bwd")]
    big = ("big_softmax", "big_sum", "big_torch_sum", "big_sparse_sum", "big_max", "big_torch_max", "big_gather",
           "big_index_select", "big_repeat_interleave")
    cases += [[case, "0", "2"] for case in big]
    code = (f"import sys; sys.path.insert(0, {str(SCRIPT.parent)!r}); import count_instructions\n"
            f"for args in {cases!r}:\n    sys.argv = ['count_instructions.py', *args]; count_instructions.main()\n"
            f"print('ran', {len(cases)})")
    proc = subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, capture_output=True, text=True)
    assert proc.stdout.split() == ["ran", str(len(cases))]


def test_call_cost_runs():
    proc = subprocess.run([sys.executable, str(SCRIPT.with_name("call_cost.py")), "--quick"], check=True,
                          capture_output=True, text=True)
    assert "| ts.segment_reduce fwd+bwd |" in proc.stdout and "| torch.segment_reduce |" in proc.stdout


def test_page_faults_runs():
    proc = subprocess.run([sys.executable, str(SCRIPT.with_name("page_faults.py")), "gather", "2000", "4", "skewed",
                           "1"], check=True, capture_output=True, text=True, cwd=SCRIPT.parent)
    assert proc.stdout.startswith("ours: median") and "faults" in proc.stdout


def test_run_profile_names_the_process_that_used_the_cpu_and_read_the_disk_and_passes_the_exit_code_on(tmp_path):
    out = tmp_path / "profile.md"
    # 1 CPU-s, then a child reads 8 MiB back after dropping them from the page cache and prints what it read
    # from storage (by its own /proc/self/io: 0 where tmp_path is a tmpfs)
    reader = """import os, time
with open("data", "wb") as f:
    f.write(os.urandom(8 << 20)); f.flush(); os.fsync(f.fileno())
    os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
io = lambda: int(open("/proc/self/io").read().split("read_bytes: ")[1].split()[0])
before = io(); open("data", "rb").read(); print(io() - before, flush=True); time.sleep(0.5)"""
    parent = f"""import subprocess, sys, time
t = time.process_time()
while time.process_time() - t < 1.0: pass
subprocess.run([sys.executable, "-c", {reader!r}])
raise SystemExit(3)"""
    proc = subprocess.run([sys.executable, str(SCRIPT.with_name("run_profile.py")), str(out), "--interval", "0.1",
                           "--", sys.executable, "-c", parent], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 3
    read = round(int(proc.stdout) / 2**30, 2)
    text = out.read_text()
    assert "exit code 3" in text and "I/O wait" in text and "by reads from storage:" in text
    rows = {line.split("`")[1]: line.split("|") for line in text.split("by reads")[0].splitlines() if "`" in line}
    assert float(rows["python -c import subprocess, sys, time"][1]) >= 0.8  # its own CPU time, sampled while it ran
    assert float(rows["python -c import os, time"][2]) >= read  # the child's reads are the child's
    assert float(rows["python -c import subprocess, sys, time"][2]) < max(read, 0.01)  # not also its parent's
