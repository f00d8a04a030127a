"""`local`'s summary: passed / FAILED per step in the table, each step's full output in local.log."""

import time

import pytest

from ci.errors import CheckFailed
from ci.lanes import local
from tests.ci.wheel_factory import make_wheel


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


def test_cells_run_side_by_side_keep_their_order_and_a_failure_stops_the_rest(tmp_path, monkeypatch):
    """The matrix lane's cells on an already built wheel, two at a time (local.pipeline, final=, parallel=)."""
    (tmp_path / "dist").mkdir()
    wheel = make_wheel(tmp_path / "dist")
    monkeypatch.setattr(local, "audited", lambda w: (w, "passed"))
    running, most = set(), []

    def cell(n, fail=False):
        def action(_wheel):
            running.add(n)
            most.append(len(running))
            time.sleep(0.2)
            running.discard(n)
            if fail:
                raise CheckFailed(f"cell {n} broke")
            return None, f"cell {n} ok"
        return f"cell {n}", action, "3.11", "2.13"

    table = local.pipeline(tmp_path / "out", [], None, None, [cell(1), cell(2), cell(3)], "{tag}",
                           ("test", "linux-x86_64", "natively"), final=wheel, parallel=2)
    assert [line.split(" | ")[0].lstrip("| ") for line in table.splitlines()[2:5]] == [
        "the final wheel, already built", "audit the final wheel", "cell 1"]
    assert max(most) == 2 and (tmp_path / "out" / wheel.name).exists()
    with pytest.raises(CheckFailed, match="cell 1 broke"):
        local.pipeline(tmp_path / "again", [], None, None, [cell(1, fail=True), *(cell(n) for n in range(2, 9))],
                       "{tag}", ("test", "linux-x86_64", "natively"), final=wheel, parallel=2)
    assert len(most) < 3 + 8  # the cells not started when cell 1 failed were cancelled
