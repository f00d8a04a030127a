"""Large CPU outputs ask for transparent huge pages (csrc/common.h: advise_huge_pages): one page fault
per 2 MiB instead of per 4 KiB. Counted in a fresh process, where every 64 MiB tensor is a fresh mapping
(in a long process one may reuse a resident heap chunk and take no faults at all)."""

import pathlib
import subprocess
import sys

import pytest

THP = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled")

COUNT = """
import resource, torch, torch_segment_ops as ts

def faults(fn):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    out = fn()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, out

rows, feat = 1 << 20, 16  # a 64 MiB output
src, indptr = torch.randn(2, feat), torch.tensor([0, rows // 2, rows])
plain, _ = faults(lambda: torch.empty(rows, feat).fill_(1.0))
ours, out = faults(lambda: ts.gather_csr(src, indptr, rows))
assert torch.equal(out, src.repeat_interleave(rows // 2, 0))
print(plain, ours)
"""


@pytest.mark.skipif(not THP.exists() or "[madvise]" not in THP.read_text(),
                    reason="needs Linux with transparent huge pages in `madvise` mode (`always` gives them to all)")
def test_a_large_output_takes_huge_pages(tmp_path):
    proc = subprocess.run([sys.executable, "-c", COUNT], check=True, capture_output=True, text=True, cwd=tmp_path)
    plain, ours = map(int, proc.stdout.split())
    assert plain >= 16384  # 4 KiB pages: the measurement works
    assert ours < plain / 4, (ours, plain)
