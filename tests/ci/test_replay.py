"""The workflow replay: its engine on small workflows written here (fast), and
the release workflow end to end (slow, root: it needs the container lane)."""

import subprocess

import pytest

from ci.lanes import replay

ENGINE = """
on: push
env:
  GREETING: hello
jobs:
  cells:
    runs-on: ubuntu-latest
    outputs:
      list: ${{ steps.make.outputs.list }}
    steps:
      - id: make
        run: echo 'list={"include":[{"n":"1","r":"ubuntu-latest"},{"n":"2","r":"macos-14"}]}' >> "$GITHUB_OUTPUT"
  work:
    needs: cells
    name: work ${{ matrix.n }}
    runs-on: ${{ matrix.r }}
    strategy:
      matrix: ${{ fromJSON(needs.cells.outputs.list) }}
    env:
      N: ${{ matrix.n }}
    steps:
      - uses: actions/checkout@0000000000000000000000000000000000000000
      - run: mkdir out && echo "$GREETING $N $WHO" > out/cell-$N.txt
        env:
          WHO: ${{ github.repository }}
      - uses: actions/upload-artifact@0000000000000000000000000000000000000000
        with:
          name: cell-${{ matrix.n }}
          path: out/*.txt
          if-no-files-found: error
  gather:
    needs: work
    runs-on: ubuntu-latest
    steps:
      - uses: actions/download-artifact@0000000000000000000000000000000000000000
        with:
          pattern: cell-*
          path: all
          merge-multiple: true
      - run: cat all/*.txt > joined.txt && test "$(cat joined.txt)" = "hello 1 owner/repo"
"""


def replay_of(tmp_path, text):
    workflow = tmp_path / "w.yml"
    workflow.write_text(text)
    state = replay.Replay(tmp_path / "work", {"repository": "owner/repo"})
    replay.run_workflow(state, workflow, {})
    return state, {entry["job"]: entry for entry in state.log}


def test_jobs_run_in_needs_order_with_matrices_outputs_env_and_artifacts(tmp_path):
    state, jobs = replay_of(tmp_path, ENGINE)
    assert [e["job"] for e in state.log] == ["cells", "work 1", "work 2", "gather"]
    assert jobs["work 2"]["status"] == "skipped" and "runner macos-14: only on GitHub" in jobs["work 2"]["note"]
    assert jobs["gather"]["status"] == "passed"
    assert (tmp_path / "work" / "artifacts" / "cell-1" / "cell-1.txt").read_text() == "hello 1 owner/repo\n"


def test_a_changed_workflow_is_replayed_as_changed(tmp_path):
    with pytest.raises(replay.ReplayError, match=r"step `cat all/\*.txt .*` failed"):
        replay_of(tmp_path, ENGINE.replace("hello 1 owner/repo", "hello 1 someone/else"))


def test_unknown_actions_and_expressions_are_errors_not_guesses(tmp_path):
    with pytest.raises(replay.ReplayError, match="no stand-in for the action actions/cache"):
        replay_of(tmp_path, "jobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/cache@v5\n")
    with pytest.raises(replay.ReplayError, match=r"cannot evaluate \$\{\{ secrets.TOKEN \}\}"):
        replay.evaluate("${{ secrets.TOKEN }}", {"github": {}})


def test_expressions():
    context = {"needs": {"m": {"outputs": {"x": '{"include": [1]}'}}}, "matrix": {"py": "3.12"}}
    assert replay.evaluate("${{ fromJSON(needs.m.outputs.x) }}", context) == {"include": [1]}
    assert replay.evaluate("py${{ matrix.py }}-${{matrix.py}}", context) == "py3.12-3.12"
    assert replay.evaluate(7, context) == 7


def test_job_conditions():
    context = {"needs": {"matrix": {"outputs": {"abi": "stable"}}}}
    assert replay.condition("needs.matrix.outputs.abi == 'stable'", context)
    assert not replay.condition("needs.matrix.outputs.abi == 'per-torch'", context)
    assert replay.condition("${{ !cancelled() && !failure() }}", context)
    with pytest.raises(replay.ReplayError, match="cannot evaluate the condition"):
        replay.condition("always()", context)


def test_gh_stand_in_files_the_release_assets(tmp_path):
    replay.ensure_gh_stand_in(tmp_path)
    (tmp_path / "a.whl").write_text("a")
    (tmp_path / "NOTES.md").write_text("n")
    proc = subprocess.run([str(tmp_path / "bin" / "gh"), "release", "create", "v1", "--verify-tag", "--title", "v1",
                           "--notes-file", "NOTES.md", "a.whl"], cwd=tmp_path, capture_output=True, text=True,
                          env={"REPLAY_RELEASES": str(tmp_path / "rel"), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "rel" / "v1").iterdir()) == ["a.whl"]
