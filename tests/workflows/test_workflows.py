"""Lint the workflows, check their structure and security conventions, and
check they agree with ci/declaration/matrix.toml and with what cibuildwheel resolves
(tests/ci/test_replay.py runs them)."""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import tomllib
import yaml

from ci.declaration import matrix
from ci.dev import lint

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = {p.name: yaml.safe_load(p.read_text()) for p in (ROOT / ".github" / "workflows").glob("*.yml")}
PUBLISH_JOBS = {("release.yml", "github-release"), ("release.yml", "pypi")}
CIBW = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["cibuildwheel"]


def jobs():
    for name, wf in WORKFLOWS.items():
        for job_id, job in wf["jobs"].items():
            yield name, job_id, job


def steps():
    for name, job_id, job in jobs():
        for step in job.get("steps", []):
            yield name, job_id, step


@pytest.mark.parametrize("tool", ["ruff", "actionlint", "zizmor"])
def test_linters_report_nothing(tool):
    (cmd,) = [c for c in lint.commands() if c[0] == tool]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_runs_shellcheck_on_the_run_scripts(tmp_path):
    """A run: script with a shell bug must fail actionlint (it would pass silently without shellcheck)."""
    (cmd,) = [c for c in lint.commands() if c[0] == "actionlint"]
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\npermissions: {}\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
                   "      - run: rm -rf $UNSET_DIR/*\n")
    result = subprocess.run([*cmd[:2], str(bad)], capture_output=True, text=True)
    assert result.returncode != 0 and "shellcheck" in result.stdout, result.stdout + result.stderr


def test_the_release_is_gated_serialised_and_from_the_default_branch():
    release = WORKFLOWS["release.yml"]
    assert release["concurrency"] == {"group": "release", "cancel-in-progress": False}
    assert release["jobs"]["github-release"]["environment"] == "release"
    assert release["jobs"]["pypi"]["environment"] == "pypi"
    check = release["jobs"]["check-tag"]
    runs = [s.get("run", "") for s in check["steps"]]
    assert 'python -m ci check-tag "$TAG" --on-branch "origin/$DEFAULT_BRANCH"' in runs
    assert check["steps"][0]["with"]["fetch-depth"] == 0


def test_jobs_that_produce_or_publish_wheels_install_only_hash_pinned_locks():
    installs = [(name, job_id, s["run"]) for name, job_id, s in steps() if "pip install" in s.get("run", "")]
    for name, job_id, run in installs:
        if (name, job_id) in {("ci.yml", "lint"), ("ci.yml", "test")}:
            continue  # they produce no release artifact
        assert "--require-hashes -r ci/requirements/" in run and run.endswith(".lock"), (name, job_id, run)
    assert "--require-hashes -r ci/requirements/build.lock" in CIBW["before-build"]


def test_the_locks_are_what_their_requirements_resolve_to():
    from ci.dev import lock

    assert lock.stale() == [], "regenerate them with `python -m ci lock`"


def test_every_action_is_pinned_to_a_commit_with_a_version_comment():
    lines = [line for p in (ROOT / ".github" / "workflows").glob("*.yml") for line in p.read_text().splitlines()]
    uses = [line.split("uses:", 1)[1].strip() for line in lines if line.strip().startswith(("uses:", "- uses:"))]
    assert uses
    for ref in uses:
        if ref.startswith("./.github/workflows/"):  # our own reusable workflows: same commit by definition
            continue
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40} # (v\d+\.\d+\.\d+|release/v\d+.*)", ref), ref


def test_top_level_permissions_are_empty_and_jobs_ask_for_their_own():
    for name, wf in WORKFLOWS.items():
        assert wf["permissions"] == {}, name
    for name, job_id, job in jobs():
        assert "permissions" in job, f"{name}:{job_id} must declare its permissions"


def test_only_publish_jobs_hold_id_token_write():
    holders = {(name, job_id) for name, job_id, job in jobs() if job["permissions"].get("id-token") == "write"}
    assert holders - {("ci.yml", "index"), ("pages.yml", "deploy")} == PUBLISH_JOBS


def test_publish_jobs_run_only_after_every_verify_cell():
    release = WORKFLOWS["release.yml"]["jobs"]
    assert release["wheels"]["uses"] == "./.github/workflows/wheels.yml"
    assert release["wheels"]["with"]["scope"] == "release"
    assert release["github-release"]["needs"] == ["wheels", "gpu-check"]
    assert release["pypi"]["needs"] == "github-release"
    reusable = WORKFLOWS["wheels.yml"]["jobs"]
    # the called workflow fails if any cell fails; verify runs when merge is skipped (stable mode), not on failure
    assert reusable["verify"]["needs"] == ["matrix", "build", "merge"]
    assert reusable["verify"]["if"] == "${{ !cancelled() && !failure() }}"
    assert reusable["merge"]["if"] == "needs.matrix.outputs.abi == 'per-torch'"
    assert reusable["verify"]["strategy"]["matrix"] == "${{ fromJSON(needs.matrix.outputs.verify) }}"
    assert release["wheels"]["needs"] == "check-tag"


def test_publishing_waits_for_the_gpu_check_on_the_declared_gpu_runner():
    release = WORKFLOWS["release.yml"]["jobs"]
    gate, check = release["gpu-runner"], release["gpu-check"]
    assert [s["run"] for s in gate["steps"] if "run" in s] == ['python -m ci gpu-runner >> "$GITHUB_OUTPUT"']
    assert set(gate["outputs"]) == {"label", "cells", "artifact"}
    assert check["needs"] == ["wheels", "gpu-runner"] and check["runs-on"] == "${{ needs.gpu-runner.outputs.label }}"
    assert check["strategy"]["matrix"] == "${{ fromJSON(needs.gpu-runner.outputs.cells) }}"
    assert check["env"]["TORCH_SEGMENT_OPS_TORCH_PIN"] == "${{ matrix.torch }}"
    download = [s for s in check["steps"] if s.get("uses", "").startswith("actions/download-artifact@")]
    assert download[0]["with"]["name"] == "${{ needs.gpu-runner.outputs.artifact }}"
    assert [s["run"] for s in check["steps"] if "run" in s] == [
        "python -m ci gpu-check --install --wheel final/*.whl --out gpu-check"]
    assert "gpu-check" in release["github-release"]["needs"] and release["pypi"]["needs"] == "github-release"


def test_pypi_uses_trusted_publishing_in_the_top_level_workflow():
    pypi = WORKFLOWS["release.yml"]["jobs"]["pypi"]
    assert pypi["environment"] == "pypi" and pypi["permissions"] == {"id-token": "write"}
    publish = [s for s in pypi["steps"] if s.get("uses", "").startswith("pypa/gh-action-pypi-publish")]
    assert publish and "password" not in publish[0].get("with", {})
    assert "secrets" not in json.dumps(WORKFLOWS["release.yml"])


def test_release_guard_runs_first_and_right_before_the_upload():
    jobs = WORKFLOWS["release.yml"]["jobs"]
    runs = [s.get("run", "") for s in jobs["check-tag"]["steps"]]
    assert any(r.startswith("python -m ci release-guard") for r in runs)
    pypi = [s.get("run", "") or s.get("uses", "") for s in jobs["pypi"]["steps"]]
    guard = next(i for i, r in enumerate(pypi) if r.startswith("python -m ci release-guard"))
    upload = next(i for i, r in enumerate(pypi) if r.startswith("pypa/gh-action-pypi-publish"))
    assert guard < upload
    assert "python -m pip install --require-hashes -r ci/requirements/release.lock" in pypi[:guard]


def test_no_expressions_inside_run_scripts():
    for name, job_id, step in steps():
        assert "${{" not in step.get("run", ""), f"{name}:{job_id}: {step['run']}"


def test_checkout_never_persists_credentials():
    for name, job_id, step in steps():
        if step.get("uses", "").startswith("actions/checkout@"):
            assert step.get("with", {}).get("persist-credentials") is False, f"{name}:{job_id}"


def test_no_caches_in_release_builds():
    for name in ("release.yml", "wheels.yml"):
        text = json.dumps(WORKFLOWS[name])
        assert "actions/cache" not in text and '"cache":' not in text, name


def test_artifact_names_follow_the_convention():
    uploads = [s["with"]["name"] for name, _, s in steps() if s.get("uses", "").startswith("actions/upload-artifact@")
               and name == "wheels.yml"]
    assert sorted(uploads) == ["${{ matrix.artifact }}", "${{ matrix.artifact }}", "sdist"]
    merge = WORKFLOWS["wheels.yml"]["jobs"]["merge"]["steps"]
    download = [s for s in merge if s.get("uses", "").startswith("actions/download-artifact@")][0]
    assert download["with"]["pattern"] == "${{ matrix.artifact }}-torch*"
    for cell in matrix.platform_cells("release"):
        assert all(i.startswith(cell["artifact"] + "-torch") for i in cell["inputs"])


def test_ci_builds_the_pr_scope_and_the_matrix_comes_from_the_declaration(tmp_path, monkeypatch):
    assert WORKFLOWS["ci.yml"]["jobs"]["wheels"]["with"]["scope"] == "pr"
    cells_step = WORKFLOWS["wheels.yml"]["jobs"]["matrix"]["steps"][-1]
    assert cells_step["run"] == 'python -m ci matrix --scope "$SCOPE" --github-output'
    out = tmp_path / "github_output"
    for scope in ("pr", "release", "next"):
        out.write_text("")
        matrix.write_github_output(scope, out)
        got = dict(line.split("=", 1) for line in out.read_text().splitlines())
        assert json.loads(got["build"])["include"] == matrix.build_cells(scope)
        assert json.loads(got["verify"])["include"] == matrix.verify_cells(scope)
        assert json.loads(got["merge"])["include"] == matrix.platform_cells(scope)
        assert got["abi"] == matrix.abi()


def test_free_threaded_cells_run_on_setup_pythons_free_threaded_builds_with_the_gil_check():
    verify = WORKFLOWS["wheels.yml"]["jobs"]["verify"]
    (setup,) = [s for s in verify["steps"] if s.get("uses", "").startswith("actions/setup-python@")]
    assert setup["with"]["python-version"] == "${{ matrix.python }}"  # "3.14t": setup-python's free-threaded build
    for scope in ("pr", "release"):
        threaded = {(c["platform"], c["python"]) for c in matrix.verify_cells(scope) if c["python"].endswith("t")}
        assert {py for _, py in threaded} >= {"3.14t", "3.15t"}  # the newest torch publishes both
        assert {p for p, _ in threaded} == {p.name for p in matrix.platforms()}
    assert [s["run"] for s in verify["steps"] if "run" in s] == ["python -m ci verify final"]
    check = (ROOT / "ci" / "scripts" / "smoke_check.py").read_text()  # what that verb runs
    assert "sys._is_gil_enabled()" in check and "check_threads()" in check


def test_the_next_torch_workflow_is_weekly_and_by_hand_and_runs_the_op_suite():
    workflow = WORKFLOWS["next-torch.yml"]
    on = workflow.get("on", workflow.get(True))
    assert set(on) == {"schedule", "workflow_dispatch"} and on["schedule"][0]["cron"]
    assert workflow["jobs"]["wheels"]["uses"] == "./.github/workflows/wheels.yml"
    assert workflow["jobs"]["wheels"]["with"]["scope"] == "next" and "next" in matrix.declaration().scopes
    verify, cells = WORKFLOWS["wheels.yml"]["jobs"]["verify"], WORKFLOWS["wheels.yml"]["jobs"]["matrix"]
    assert verify["env"]["TORCH_SEGMENT_OPS_OP_TESTS"] == "${{ matrix.op_tests }}"
    assert cells["steps"][-1]["env"][matrix.NEXT_INDEX_VARIABLE] == "${{ vars.TORCH_NEXT_INDEX }}"
    assert {c["op_tests"] for c in matrix.verify_cells("next")} == {"1"}
    assert {c["op_tests"] for c in matrix.verify_cells("release")} == {""}


def cibw_identifiers(cell, tmp_path):
    env = dict(os.environ, CIBW_CACHE_PATH=str(tmp_path / "cibw"), CIBW_BUILD=cell["cibw_build"],
               CIBW_ARCHS=cell["cibw_archs"])
    result = subprocess.run(["cibuildwheel", "--platform", cell["cibw_platform"], "--print-build-identifiers"],
                            cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return result.stdout.split()


@pytest.mark.parametrize("cell", matrix.build_cells("release"), ids=lambda c: c["artifact"])
def test_cibuildwheel_selects_exactly_the_declared_pythons(cell, tmp_path):
    t = matrix.torch(cell["torch"])
    platform_name = {"linux": "manylinux", "macos": "macosx"}[cell["cibw_platform"]]
    suffix = f"{platform_name}_{cell['cibw_archs']}"
    expected = [f"cp{v.replace('.', '')}-{suffix}" for v in t.python]
    assert cibw_identifiers(cell, tmp_path) == expected


def test_cibuildwheel_resolves_our_verbs(tmp_path):
    """cibuildwheel prints the options it resolved before it needs docker (which cannot run here)."""
    env = dict(os.environ, CIBW_CACHE_PATH=str(tmp_path / "cibw"), CIBW_BUILD="cp311-*", CIBW_ARCHS="x86_64")
    result = subprocess.run(["cibuildwheel", "--platform", "linux", "--output-dir", str(tmp_path / "out")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    # it resolved the whole configuration and stopped only where it needs a container engine
    assert result.returncode != 0 and "docker is too old or is not working properly" in result.stderr, result.stderr
    options = dict(re.findall(r"^\s+(\w+): (.*)$", result.stdout, re.MULTILINE))
    assert options["repair_command"] == "cd {project} && python -m ci repair -w {dest_dir} {wheel}"
    assert options["test_command"] == "python {project}/ci/scripts/smoke_check.py"
    assert options["before_build"].endswith("python -m ci install-torch && python -m ci install-cuda "
                                            "/tmp/torch-segment-ops-cuda")
    assert 'TORCH_SEGMENT_OPS_CUDA_DIR="/tmp/torch-segment-ops-cuda"' in result.stdout  # its environment
    assert options["before_test"].endswith("python -m ci install-torch")
    assert "manylinux_2_28" in result.stdout


def test_cibuildwheel_config_matches_the_declaration():
    macos = matrix.platform("macos-arm64")
    assert CIBW["macos"]["environment"]["MACOSX_DEPLOYMENT_TARGET"] == macos.deployment_target
    assert macos.wheel_platform == f"macosx_{macos.deployment_target.replace('.', '_')}_arm64"
    for p in matrix.platforms():
        if p.cibw_platform == "linux":
            assert CIBW["linux"][f"manylinux-{p.arch}-image"] == p.manylinux_image
            assert p.wheel_platform == f"{p.manylinux_image}_{p.arch}"
    assert {"TORCH_SEGMENT_OPS_TORCH_PIN", "TORCH_SEGMENT_OPS_TORCH_INDEX"} <= set(CIBW["linux"]["environment-pass"])
    # the folder before-build installs the CUDA toolkits into is the one setup.py reads
    assert CIBW["before-build"].endswith(f"install-cuda {CIBW['linux']['environment']['TORCH_SEGMENT_OPS_CUDA_DIR']}")
