"""`replay`: run a workflow here as GitHub would, job by job, from its YAML.

The YAML is parsed, not restated: jobs run in `needs` order, reusable
workflows are entered, matrices are expanded from the outputs of the jobs
that computed them, `${{ }}` expressions are evaluated, and every `run:` step
runs exactly as written (bash -e, in the job's checkout, with the workflow's,
job's and step's env) in a clean venv of the job's CPython holding only what
the job installs. Artifacts pass between jobs through folders named like the
artifacts. What only GitHub has is replaced by stand-ins, each named in the
job's log:

- actions/checkout: a clone of this repository's HEAD (what is committed);
  actions/setup-python: a venv
  of this machine's CPython of that version (a cell whose CPython is not here
  is skipped, with the reason);
- the GPU gate: release.gpu_runner is replayed as a stand-in label, whose job runs only on a
  machine with a GPU (else it is skipped with that reason);
- runners: `ubuntu-latest` is this machine; the cibuildwheel step of a
  linux x86_64 cell runs in the container lane (ci/lanes/container.py: our docker
  daemon, the stand-in image, torch from its file index, CPython 3.11); cells
  on other runners, or for a torch not at hand, are skipped and reported;
- PyTorch's CPU index (unreachable here) -> the lane's local torch index;
  the platform tag a cell expects -> the one the stand-in image reaches;
- actions/attest: the subjects' SHA-256 recorded, not signed; `gh release
  create`: a `gh` on PATH that files the release's assets in a folder;
  pypa/gh-action-pypi-publish: `twine upload` to a pypiserver on 127.0.0.1.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..declaration import matrix
from ..errors import PipelineError
from ..publish import guard, index, release
from ..stages import debs
from ..util import envs
from ..util.envs import REQUIREMENTS, ROOT, log
from . import container

WORKFLOWS = ROOT / ".github" / "workflows"
HERE = "ubuntu-latest"  # the runner label this machine stands in for
GPU_STAND_IN = "gpu-runner-stand-in"  # the label release.gpu_runner is replayed with (none is declared)
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


class Skip(Exception):
    """The job cannot run here; the message says why."""


@dataclass
class Replay:
    workdir: Path
    github: dict
    index_url: str = ""  # the local package index the publish stand-in uploads to
    docker_env: dict | None = None
    outputs: dict = field(default_factory=dict)  # job id -> outputs
    log: list[dict] = field(default_factory=list)  # one entry per job (cell): name, status, seconds, note

    @property
    def artifacts(self) -> Path:
        return self.workdir / "artifacts"


# -- expressions -----------------------------------------------------------

EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def value(expr: str, context: dict):
    """The value of a (small) GitHub expression: a dotted lookup or fromJSON(lookup)."""
    match = re.fullmatch(r"fromJSON\((.+)\)", expr)
    if match:
        return json.loads(value(match[1], context))
    current = context
    for part in expr.split("."):
        if not isinstance(current, dict) or part not in current:
            raise ReplayError(f"replay: cannot evaluate ${{{{ {expr} }}}} (no {part!r})")
        current = current[part]
    return current


def evaluate(text, context: dict):
    """Expand ${{ }} in text; a whole-string expression keeps its type (fromJSON gives a dict)."""
    if not isinstance(text, str):
        return text
    whole = EXPRESSION.fullmatch(text.strip())
    if whole:
        return value(whole[1], context)
    return EXPRESSION.sub(lambda m: str(value(m[1], context)), text)


def condition(text: str, context: dict) -> bool:
    """A job's `if:`: terms joined by &&, each `!cancelled()`/`!failure()` (true: the replay stops at
    the first failure) or `<lookup> == '<literal>'`."""
    expr = EXPRESSION.fullmatch(text.strip())
    result = True
    for term in (expr[1] if expr else text).split("&&"):
        term = term.strip()
        if term in ("!cancelled()", "!failure()"):
            continue
        match = re.fullmatch(r"([\w.-]+)\s*==\s*'([^']*)'", term)
        if not match:
            raise ReplayError(f"replay: cannot evaluate the condition {term!r}")
        result &= str(value(match[1], context)) == match[2]
    return result


# -- workflows and jobs ------------------------------------------------------

def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def in_order(jobs: dict) -> list[str]:
    done: list[str] = []
    while len(done) < len(jobs):
        ready = [j for j in jobs if j not in done and set(needs(jobs[j])) <= set(done)]
        if not ready:
            raise ReplayError(f"replay: a cycle in needs: {sorted(set(jobs) - set(done))}")
        done += ready
    return done


def needs(job: dict) -> list[str]:
    value_ = job.get("needs", [])
    return [value_] if isinstance(value_, str) else list(value_)


def run_workflow(replay: Replay, path: Path, inputs: dict, prefix: str = "") -> None:
    workflow = load(path)
    for job_id in in_order(workflow["jobs"]):
        job = workflow["jobs"][job_id]
        context = {"github": replay.github, "inputs": inputs, "vars": repository_variables(),
                   "needs": {n: {"outputs": replay.outputs.get(prefix + n, {})} for n in needs(job)}}
        if "uses" in job:  # a reusable workflow: ./.github/workflows/x.yml
            called = {k: evaluate(v, context) for k, v in job.get("with", {}).items()}
            run_workflow(replay, ROOT / job["uses"].removeprefix("./"), called, prefix=f"{prefix}{job_id}/")
            continue
        if "if" in job and not condition(job["if"], context):
            replay.log.append({"job": job_id, "status": "skipped", "seconds": 0, "note": f"if: {job['if']}"})
            continue
        cells = [{}]
        if "strategy" in job:
            cells = evaluate(job["strategy"]["matrix"], context)["include"]
        outputs = {}
        for n, cell in enumerate(cells):
            outputs = run_job(replay, workflow, prefix + job_id, job, dict(context, matrix=cell), n)
        replay.outputs[prefix + job_id] = outputs


def repository_variables() -> dict:
    """What the workflows read from the repository's settings (`vars.`), as this machine has them."""
    return {"DEBIAN_MIRROR": debs.default_mirror() or ""}


def run_job(replay: Replay, workflow: dict, job_id: str, job: dict, context: dict, n: int) -> dict:
    name = evaluate(job.get("name", job_id), context)
    start = time.perf_counter()
    why_not = cannot_run(job, context, replay)
    if why_not:
        replay.log.append({"job": name, "status": "skipped", "seconds": 0, "note": why_not})
        log(f"replay: {name}: skipped ({why_not})")
        return {}
    log(f"replay: {name} ...")
    job_dir = replay.workdir / "jobs" / f"{job_id.replace('/', '-')}-{n}"
    shutil.rmtree(job_dir, ignore_errors=True)
    job_dir.mkdir(parents=True)
    env = {**{k: str(evaluate(v, context)) for k, v in workflow.get("env", {}).items()},
           **{k: str(evaluate(v, context)) for k, v in job.get("env", {}).items()}}
    notes = stand_in_env(replay, context.get("matrix", {}), env)
    state = {"cwd": job_dir, "python": None, "steps": {}}
    try:
        for step in job["steps"]:
            step_context = dict(context, steps=state["steps"])
            if "uses" in step:
                notes += use_action(replay, step, step_context, state, job_dir)
            else:
                run_step(replay, step, step_context, state, job_dir, env, name)
    except Skip as why:
        replay.log.append({"job": name, "status": "skipped", "seconds": 0, "note": str(why)})
        log(f"replay: {name}: skipped ({why})")
        return {}
    outputs = {k: str(evaluate(v, dict(context, steps=state["steps"]))) for k, v in job.get("outputs", {}).items()}
    replay.log.append({"job": name, "status": "passed", "seconds": round(time.perf_counter() - start, 1),
                       "note": "; ".join(dict.fromkeys(notes))})
    return outputs


def cannot_run(job: dict, context: dict, replay: Replay) -> str | None:
    runner = evaluate(job.get("runs-on", HERE), context)
    if runner == GPU_STAND_IN:
        return None if shutil.which("nvidia-smi") else ("no GPU on this machine: the GPU check runs on the "
                                                        "runner ci/declaration/matrix.toml release.gpu_runner names")
    if runner != HERE:
        return f"runner {runner}: only on GitHub"
    cell = context.get("matrix", {})
    if "cibw_build" in cell and replay.docker_env is None:
        return f"the container lane cannot run here: {container.missing()}"
    python = cell.get("python")
    if python and not python_here(python):
        return f"CPython {python} is not on this machine"
    pin = cell.get("torch_pin")
    at_hand = matrix.torch(matrix.declaration().local.torch[0]).pin  # the torch the container lane has
    if pin and pin != at_hand:
        return f"torch {pin}: the replay's lanes have torch {at_hand} only (its build cell ran only on GitHub)"
    if python and python != matrix.declaration().local.python:
        return f"CPython {python}: torch {pin} is at hand for CPython {matrix.declaration().local.python} only"
    return None


def python_here(version: str) -> bool:
    try:
        envs.find_python(version)
        return True
    except PipelineError:
        return False


def stand_in_env(replay: Replay, cell: dict, env: dict) -> list[str]:
    """Point a cell's torch index, expected tag and cibuildwheel at what stands in for GitHub's."""
    notes = []
    if env.get("TORCH_SEGMENT_OPS_TORCH_INDEX", "").startswith("https://"):
        env["TORCH_SEGMENT_OPS_TORCH_INDEX"] = f"file://{container.torch_index([cell['torch_pin']])}"
        notes.append("torch from the lane's local index (stands in for PyTorch's CPU index)")
    if "WHEEL_PLATFORM" in env and env["WHEEL_PLATFORM"].startswith("manylinux_2_28_x86_64"):
        env["WHEEL_PLATFORM"] = "manylinux_2_34_x86_64"
        notes.append("expects manylinux_2_34_x86_64 (the stand-in image's glibc), not manylinux_2_28")
    if "cibw_build" in cell:
        env.update(container.cibuildwheel_env(replay.docker_env, cell["torch_pin"]))  # index under /host
        notes.append(f"cibuildwheel in the container lane (stand-in image, {env['CIBW_BUILD']})")
    return notes


def run_step(replay: Replay, step: dict, context: dict, state: dict, job_dir: Path, job_env: dict,
             name: str) -> None:
    script = step["run"]
    output_file = job_dir / f"output-{len(state['steps'])}"
    output_file.write_text("")
    env = {**clean_environ(), **job_env, **{k: str(evaluate(v, context)) for k, v in step.get("env", {}).items()},
           "GITHUB_OUTPUT": str(output_file), "GITHUB_REPOSITORY": replay.github["repository"],
           "REPLAY_RELEASES": str(replay.workdir / "releases"), "CI": "true",
           release.REPLAY_GPU_RUNNER: GPU_STAND_IN}
    if state["python"]:
        env["PATH"] = f"{state['python'] / 'bin'}{os.pathsep}{replay.workdir / 'bin'}{os.pathsep}{env['PATH']}"
        env["VIRTUAL_ENV"] = str(state["python"])
    proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=state["cwd"], env=env,
                          capture_output=True, text=True)
    (job_dir / "log.txt").open("a").write(f"$ {script}\n{proc.stdout}{proc.stderr}\n")
    if proc.returncode != 0:
        raise ReplayError(f"replay: job {name!r}, step `{script}` failed ({proc.returncode}):\n"
                          f"{(proc.stdout + proc.stderr)[-3000:]}")
    if "id" in step:
        pairs = [line.split("=", 1) for line in output_file.read_text().splitlines() if "=" in line]
        state["steps"][step["id"]] = {"outputs": dict(pairs)}


def clean_environ() -> dict:
    keep = ("PATH", "HOME", "LANG", "TMPDIR", "PIP_CERT", "PIP_FIND_LINKS", "PIP_DEFAULT_TIMEOUT",
            "PIP_DISABLE_PIP_VERSION_CHECK")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(str(envs.cache_dir())))  # not the dev env
    return env


# -- actions -------------------------------------------------------------------

def use_action(replay: Replay, step: dict, context: dict, state: dict, job_dir: Path) -> list[str]:
    action = step["uses"].split("@")[0]
    args = {k: evaluate(v, context) for k, v in step.get("with", {}).items()}
    if action == "actions/checkout":  # this repository's HEAD, with its branches as origin/*
        subprocess.run(["git", "clone", "-q", str(ROOT), str(job_dir / "src")], check=True)
        state["cwd"] = job_dir / "src"
    elif action == "actions/setup-python":
        version = str(args["python-version"])
        state["python"] = job_dir / "python"
        subprocess.run([envs.find_python(version), "-m", "venv", str(state["python"])], check=True)
    elif action == "actions/upload-artifact":
        files = sorted(state["cwd"].glob(args["path"]))
        if not files and args.get("if-no-files-found") == "error":
            raise ReplayError(f"replay: upload-artifact {args['name']}: no files match {args['path']}")
        target = replay.artifacts / args["name"]
        target.mkdir(parents=True, exist_ok=True)
        for file in files:
            shutil.copy2(file, target / file.name)
    elif action == "actions/download-artifact":
        download_artifacts(replay, args, state["cwd"])
    elif action == "actions/attest":
        subjects = sorted(state["cwd"].glob(args["subject-path"]))
        (job_dir / "attestations.json").write_text(json.dumps(
            {p.name: index.sha256(p.read_bytes()) for p in subjects}, indent=1))
        return [f"attest: {len(subjects)} subjects hashed, not signed (GitHub only)"]
    elif action == "pypa/gh-action-pypi-publish":
        publish(replay, state["cwd"] / args.get("packages-dir", "dist"))
        return [f"publish: twine upload to the local pypiserver {replay.index_url}"]
    else:
        raise ReplayError(f"replay: no stand-in for the action {action}")
    return []


def download_artifacts(replay: Replay, args: dict, cwd: Path) -> None:
    target = cwd / args.get("path", ".")
    names = sorted(p.name for p in replay.artifacts.iterdir()) if replay.artifacts.exists() else []
    if "name" in args:
        if args["name"] not in names:
            raise Skip(f"no artifact {args['name']}: the cells that make it run only on GitHub")
        chosen, flat = [args["name"]], True
    else:
        chosen = [n for n in names if fnmatch.fnmatch(n, args.get("pattern", "*"))]
        flat = bool(args.get("merge-multiple"))
        if not chosen:
            raise Skip(f"no artifact matches {args.get('pattern')}: the cells that make them run only on GitHub")
    for name in chosen:
        dest = target if flat else target / name
        dest.mkdir(parents=True, exist_ok=True)
        for file in (replay.artifacts / name).iterdir():
            shutil.copy2(file, dest / file.name)


def publish(replay: Replay, packages: Path) -> None:
    tools = envs.tools_env(matrix.declaration().local.python, "replay", [REQUIREMENTS / "replay.txt"])
    files = sorted(str(p) for p in packages.iterdir())
    proc = subprocess.run([str(tools.bin("twine")), "upload", "--non-interactive", "--repository-url",
                           replay.index_url.removesuffix("simple/"), "-u", "replay", "-p", "replay", *files],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise ReplayError(f"replay: twine upload failed:\n{proc.stdout}{proc.stderr}")


def repository() -> str:
    """owner/name of the repository pyproject.toml names (what github.repository is in a release)."""
    return guard.repo_key(guard.project()[1])


def summary(replay: Replay) -> str:
    lines = ["| job | result | seconds | stand-ins / reason |", "|---|---|---|---|"]
    lines += [f"| {e['job']} | {e['status']} | {e['seconds']} | {e['note']} |" for e in replay.log]
    return "\n".join(lines)


def ensure_gh_stand_in(workdir: Path) -> None:
    bin_dir = workdir / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "gh").write_text(GH_STAND_IN)
    (bin_dir / "gh").chmod(0o755)


@contextmanager
def package_index(folder: Path):
    """pypiserver on 127.0.0.1 (uploads without authentication); yields its simple index URL."""
    tools = envs.tools_env(matrix.declaration().local.python, "replay", [REQUIREMENTS / "replay.txt"])
    folder.mkdir(parents=True, exist_ok=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
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


def install_from_index(replay: Replay) -> str:
    """What a user does after the release: pip install our project from the index it was published to
    (torch from the local torch index), then the smoke check from outside the tree."""
    local = matrix.declaration().local
    env_dir = replay.workdir / "user"
    shutil.rmtree(env_dir, ignore_errors=True)
    subprocess.run([envs.find_python(local.python), "-m", "venv", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    pin = matrix.torch(local.torch[0]).pin
    pip = [str(python), "-m", "pip", "install", "-q", "--index-url", replay.index_url,
           "--extra-index-url", f"file://{container.torch_index([pin])}", "torch-segment-ops", f"torch=={pin}"]
    environ = dict(envs.pip_environ(), PIP_CONFIG_FILE=os.devnull)
    environ.pop("PIP_FIND_LINKS", None)
    for cmd in (pip, [str(python), str(ROOT / "ci" / "scripts" / "smoke_check.py")]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=environ, cwd=replay.workdir)
        if proc.returncode != 0:
            raise ReplayError(f"replay: installing the published release failed:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def run(workflow: str, workdir: Path) -> str:
    """Replay .github/workflows/<workflow> (a release on the tag v<version>); returns the summary."""
    from ..publish.release import package_version

    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    tag = f"v{package_version()}"
    branch = subprocess.run(["git", "rev-parse", "--abbrev-ref", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    github = {"repository": repository(), "ref_name": tag, "ref": f"refs/tags/{tag}", "token": "replay",
              "event_name": "push", "event": {"repository": {"default_branch": branch}}}
    replay = Replay(workdir, github)
    ensure_gh_stand_in(workdir)
    lane = container.missing()
    with package_index(workdir / "index") as url, (
            container.docker_daemon() if not lane else nullcontext()) as docker_env:
        replay.index_url, replay.docker_env = url, docker_env
        run_workflow(replay, WORKFLOWS / workflow, {})
        text = summary(replay)
        if (workdir / "index").exists() and any((workdir / "index").iterdir()):
            smoke = install_from_index(replay)
            text += f"\n\npip install torch-segment-ops from the replayed release's index ({url}):\n{smoke}"
    (workdir / "replay.json").write_text(json.dumps(replay.log, indent=1) + "\n")
    (workdir / "replay.md").write_text(text + "\n")
    return text
