"""The verification report: the release matrix joined with what the lanes recorded."""

import json
from pathlib import Path

from ci.declaration import matrix
from ci.lanes import report
from ci.lanes.report import CIBW, CROSS, CUDA_NOTE, GITHUB, NATIVE, QEMU, Record


def rows_by_cell(records):
    return {(r["platform"], r["python"], r["torch"]): r for r in report.cells(records)}


def test_every_release_cell_is_listed_and_unrecorded_ones_are_github_only():
    rows = report.cells([])
    cells = {(c["platform"], c["python"], c["torch"]) for c in matrix.verify_cells("release")}
    assert {(r["platform"], r["python"], r["torch"]) for r in rows} == cells and len(rows) == len(cells)
    assert {r["method"] for r in rows} == {GITHUB}


def test_the_strongest_passing_method_wins_and_star_covers_every_cpython():
    records = [Record("linux-x86_64", "3.11", "2.13", CIBW, "passed"),
               Record("linux-x86_64", "3.11", "2.13", NATIVE, "passed"),
               Record("macos-arm64", "*", "2.14", CROSS, "passed: built, repaired, audited"),
               Record("linux-aarch64", "3.11", "2.13", QEMU, "FAILED: smoke"),
               Record("linux-aarch64", "3.11", "2.13", CIBW, "passed")]
    rows = rows_by_cell(records)
    native = rows["linux-x86_64", "3.11", "2.13"]
    assert native["method"] == NATIVE and native["also"] == [CIBW]
    assert all(rows["macos-arm64", py, "2.14"]["method"] == CROSS for py in matrix.torch("2.14").python)
    assert rows["macos-arm64", "3.11", "2.13"]["method"] == GITHUB
    assert rows["linux-aarch64", "3.11", "2.13"]["method"] == CIBW  # a pass beats a stronger failure


def test_report_reads_the_lanes_files_and_writes_markdown_and_json(tmp_path):
    report.write(tmp_path / "a", "native", [Record("linux-x86_64", "3.11", "2.13", NATIVE, "passed")])
    report.write(tmp_path / "b", "macos-cross", [Record("macos-arm64", "*", "2.13", CROSS, "passed")])
    text = report.report(tmp_path)
    total, macos = len(matrix.verify_cells("release")), len(matrix.torch("2.13").python)
    assert text.splitlines()[0] == f"{total} release cells: 1 {NATIVE}, {macos} {CROSS}, {total - 1 - macos} {GITHUB}"
    assert (tmp_path / "report.md").read_text() == text + "\n"
    rows = json.loads((tmp_path / "report.json").read_text())
    assert len(rows) == total and rows_by_cell(report.collect(tmp_path))["linux-x86_64", "3.11", "2.13"]["date"]
    doc = tmp_path / "verification.md"
    assert report.report(tmp_path, doc) == text
    page = doc.read_text()  # the documentation page: where it came from, then the same table
    assert page.startswith("# What was verified where\n\nWritten by `python3.11 -m ci report --doc verification.md`")
    assert "the records of the lanes macos-cross, native" in page and page.endswith(text + "\n")


def test_the_documentation_page_is_the_reports_output():
    """docs/verification.md is written by `report --doc`, never by hand: its table parses as one."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "verification.md").read_text()
    assert page.startswith("# What was verified where\n\nWritten by `python3.11 -m ci report --doc")
    assert f"{len(matrix.verify_cells('release'))} release cells: " in page and CUDA_NOTE in page


def test_a_cell_that_ran_only_the_cpu_kernels_says_so_in_the_report():
    from ci.lanes.local import record_result

    row = ("torch 2.10.0+cu128, torch_segment_ops 0.1.0, build stable (python 3.11.7, from /x) [torch uses CUDA "
           "12.8, the wheel has CUDA 13 builds: import refused with the clear ImportError; CPU kernels tested with "
           "TORCH_SEGMENT_OPS_CPU_ONLY=1] | op tests: 285 passed in 25s\nthe rest")
    assert record_result(row) == ("passed: torch uses CUDA 12.8, the wheel has CUDA 13 builds: import refused with "
                                  "the clear ImportError; CPU kernels tested with TORCH_SEGMENT_OPS_CPU_ONLY=1")
    assert record_result("torch 2.14.1+cu130, ... build stable + cu13 (...) | op tests: 285 passed") == "passed"
    assert record_result("FAILED: audit: x\ndetails") == "FAILED: audit: x"
