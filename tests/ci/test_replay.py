"""The workflow replay: act with our stand-ins on a small workflow written here (a few seconds),
the cells it leaves out and why, and the jobs after the GPU gate. The release workflow end to end
is tests/e2e/test_replay_e2e.py (slow, root: it needs the container lane)."""

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from ci.declaration import matrix
from ci.lanes import replay

CELLS = '{"include":[{"n":"1","runner":"ubuntu-latest"},{"n":"2","runner":"macos-14"}]}'
WORKFLOW = f"""
on: push
env:
  GREETING: hello
jobs:
  cells:
    runs-on: ubuntu-latest
    outputs:
      list: ${{{{ steps.make.outputs.list }}}}
    steps:
      - id: make
        run: echo 'list={CELLS}' >> "$GITHUB_OUTPUT"
  work:
    needs: cells
    name: work ${{{{ matrix.n }}}}
    runs-on: ${{{{ matrix.runner }}}}
    strategy:
      matrix: ${{{{ fromJSON(needs.cells.outputs.list) }}}}
    env:
      N: ${{{{ matrix.n }}}}
    steps:
      - uses: actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1
      - uses: actions/setup-python@0000000000000000000000000000000000000000
        with:
          python-version: "3.11"
      - run: |
          venv=$(python -c 'import sys; print(sys.prefix != sys.base_prefix)')
          mkdir out && echo "$GREETING $N $WHO $venv" > out/cell-$N.txt
        env:
          WHO: ${{{{ github.repository }}}}
      - uses: actions/upload-artifact@0000000000000000000000000000000000000000
        with:
          name: cell-${{{{ matrix.n }}}}
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
      - run: cat all/*.txt > joined.txt && test "$(cat joined.txt)" = "hello 1 owner/repo True"
"""


def act_on(tmp_path, text):
    repo = tmp_path / "repo"
    (repo / ".github" / "workflows").mkdir(parents=True)
    workflow = repo / ".github" / "workflows" / "w.yml"
    workflow.write_text(text)
    for cmd in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "w"],
                ["remote", "add", "origin", "https://github.com/owner/repo.git"]):
        subprocess.run(["git", *cmd], cwd=repo, check=True)
    (tmp_path / "event.json").write_text(json.dumps({"ref": "refs/tags/v1"}))
    env = dict(replay.stand_in_env(), REPLAY_ARTIFACTS=str(tmp_path / "artifacts"),
               REPLAY_PYTHONS=json.dumps(replay.pythons()))
    return replay.act(tmp_path, repo, workflow, env, "test")


def test_act_runs_the_cells_here_with_outputs_env_artifacts_and_a_venv(tmp_path):
    entries = act_on(tmp_path, WORKFLOW)
    assert sorted(e["job"] for e in entries) == ["cells", "gather", "work 1"]  # the macos-14 cell is left out
    assert all(e["status"] == "passed" for e in entries)
    assert (tmp_path / "artifacts" / "cell-1" / "cell-1.txt").read_text() == "hello 1 owner/repo True\n"


def test_a_changed_workflow_is_replayed_as_changed(tmp_path):
    with pytest.raises(replay.ReplayError, match=r"act w.yml failed \(gather\)"):
        act_on(tmp_path, WORKFLOW.replace("hello 1 owner/repo True", "hello 1 someone/else True"))


def test_an_action_without_a_stand_in_is_an_error_not_a_download(tmp_path):
    workflow = tmp_path / "w.yml"
    workflow.write_text(f"jobs:\n  a:\n    steps:\n      - uses: actions/cache@{'1' * 40}\n")
    with pytest.raises(replay.ReplayError, match="no stand-in for the action actions/cache"):
        replay.stand_ins([workflow])
    args = replay.stand_ins(replay.with_called(replay.WORKFLOWS / "release.yml", replay.ROOT))  # + wheels.yml
    assert args[0] == "--local-repository" and not any("actions/checkout" in a for a in args)  # act's own
    assert any(a.startswith("pypa/gh-action-pypi-publish@") for a in args)


def test_every_release_cell_left_out_says_why_and_matches_the_filters():
    spec = yaml.safe_load((replay.WORKFLOWS / "release.yml").read_text())
    skipped = replay.skipped_cells(spec)  # raises if a filter and a reason disagree on any cell
    assert all(cell["note"] for cell in skipped)
    assert any("runner macos-14: only on GitHub" in cell["note"] for cell in skipped)
    if not replay.gpu_here():
        assert {cell["id"] for cell in skipped if "no GPU" in cell["note"]} == {"gpu-check"}


def test_free_threaded_and_next_torch_cells_are_left_out_with_their_reasons():
    release = replay.skipped_cells(yaml.safe_load((replay.WORKFLOWS / "release.yml").read_text()))
    threaded = [c for c in release if "linux-x86_64" in c["job"] and "t, torch=" in c["job"]]
    assert len(threaded) == sum(c["python"].endswith("t") and c["platform"] == "linux-x86_64"
                                for c in matrix.verify_cells("release"))
    assert all("free-threaded CPython" in c["note"] and "setup-python provides it" in c["note"] for c in threaded)
    spec = yaml.safe_load((replay.WORKFLOWS / "next-torch.yml").read_text())
    assert replay.trigger(spec) == "workflow_dispatch" and replay.trigger(
        yaml.safe_load((replay.WORKFLOWS / "release.yml").read_text())) == "push"
    verify = [c for c in replay.skipped_cells(spec) if c["id"] == "verify"]
    assert len(verify) == len(matrix.verify_cells("next"))
    assert all("its next release, from PyTorch's nightly or test index" in c["note"] for c in verify)


def test_the_jobs_after_the_gpu_gate_keep_their_steps_and_lose_their_needs_on_it():
    spec = yaml.safe_load((replay.WORKFLOWS / "release.yml").read_text())
    later = replay.after_gate(spec, {"gpu-check"})
    assert list(later)[:2] == ["name", "on"] and later["on"] == {"push": {"tags": ["v*"]}}
    assert set(later["jobs"]) == {"github-release", "pypi"}
    assert "needs" not in later["jobs"]["github-release"] and later["jobs"]["pypi"]["needs"] == ["github-release"]
    assert later["jobs"]["pypi"]["steps"] == spec["jobs"]["pypi"]["steps"]


def test_jobs_act_skips_by_their_condition_are_listed_with_it():
    wheels = replay.WORKFLOWS / "wheels.yml"
    skipped = replay.not_run_by_condition([wheels], [{"id": "verify"}])
    assert [(e["id"], e["status"]) for e in skipped] == [("merge", "skipped")] and "per-torch" in skipped[0]["note"]


def test_act_results_are_one_entry_per_cell():
    lines = [{"job": "release/build x ", "jobID": "build", "matrix": {"a": "1"}, "time": "2026-01-01T00:00:00Z",
              "msg": "start"},
             {"job": "release/build x", "jobID": "build", "matrix": {"a": "1"}, "time": "2026-01-01T00:01:30Z",
              "jobResult": "success", "msg": "done"},
             {"job": "release/pypi", "jobID": "pypi", "time": "2026-01-01T00:02:00Z", "jobResult": "failure"}]
    got = replay.results("not json\n" + "\n".join(json.dumps(line) for line in lines))
    assert [(e["job"], e["status"], e["seconds"]) for e in got] == [("build x", "passed", 90.0), ("pypi", "failure", 0)]


def test_gh_stand_in_files_the_release_assets(tmp_path):
    replay.ensure_gh_stand_in(tmp_path)
    (tmp_path / "a.whl").write_text("a")
    (tmp_path / "NOTES.md").write_text("n")
    proc = subprocess.run([str(tmp_path / "bin" / "gh"), "release", "create", "v1", "--verify-tag", "--title", "v1",
                           "--notes-file", "NOTES.md", "a.whl"], cwd=tmp_path, capture_output=True, text=True,
                          env={"REPLAY_RELEASES": str(tmp_path / "rel"), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "rel" / "v1").iterdir()) == ["a.whl"]


def test_each_stand_in_takes_every_input_the_workflows_give_its_action():
    for workflow in replay.with_called(replay.WORKFLOWS / "release.yml", replay.ROOT):
        for job in yaml.safe_load(workflow.read_text())["jobs"].values():
            for step in job.get("steps", []):
                action = step.get("uses", "").split("@")[0]
                if action and action not in replay.OWN_ACTIONS:
                    spec = yaml.safe_load((replay.STAND_INS / action.split("/")[1] / "action.yml").read_text())
                    assert set(step.get("with", {})) <= set(spec["inputs"]), (workflow.name, action)
                    assert spec["runs"]["using"] == "composite"


def test_setup_python_stand_in_gives_each_job_a_venv_of_its_own_copied_from_one_made_once(tmp_path):
    env = dict(replay.stand_in_env(), REPLAY_PYTHONS=json.dumps(replay.pythons()), INPUT_PYTHON_VERSION="3.11")
    made = []
    for job in ("a", "b"):
        (tmp_path / job).mkdir()
        run = dict(env, RUNNER_TEMP=str(tmp_path / job), GITHUB_PATH=str(tmp_path / job / "path"))
        subprocess.run([env["REPLAY_PYTHON"], env["REPLAY_STAND_IN"], "setup-python"], env=run, check=True)
        made.append({p: p.stat().st_mtime_ns for p in Path(env["REPLAY_VENVS"]).glob("*.ready")})
    assert made[0] and made[0] == made[1]  # the second job copied the venv the first made or found
    for job in ("a", "b"):
        venv = tmp_path / job / "python-3.11"
        assert (tmp_path / job / "path").read_text() == f"{venv / 'bin'}\n"
        assert (venv / "bin" / "pip").read_text().startswith(f"#!{venv / 'bin'}/python")  # its own, not the template's
        out = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "--version"], capture_output=True, text=True,
                             check=True).stdout
        assert str(venv / "lib") in out
