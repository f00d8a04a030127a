"""`local`'s summary: passed / FAILED per step in the table, each step's full output in local.log."""

import pytest

from ci.errors import CheckFailed
from ci.lanes import local


def test_the_table_says_passed_or_failed_and_the_log_holds_the_details(tmp_path):
    progress = local.Progress(3, tmp_path / local.LOG)
    progress.step("build torch 2.13", lambda: (None, "built"))
    output = "torch 2.13.0+cpu, build stable\n---- not a step\nop tests: 3 passed"
    progress.step("smoke 3.11", lambda: (None, output))
    with pytest.raises(CheckFailed) as failed:
        progress.step("smoke 3.12", lambda: 1 / 0)
    assert isinstance(failed.value.__cause__, ZeroDivisionError)  # chained: --debug shows where
    message = str(failed.value)
    assert "smoke 3.12: FAILED: division by zero" in message and str(tmp_path / local.LOG) in message
    rows = [line.split(" | ")[4] for line in progress.table().splitlines()[2:]]
    assert rows == ["passed", "passed", "FAILED"]
    assert local.read_log(tmp_path) == {"build torch 2.13": "built", "smoke 3.11": output,
                                        "smoke 3.12": "FAILED: division by zero"}
