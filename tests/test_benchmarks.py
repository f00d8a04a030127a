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
