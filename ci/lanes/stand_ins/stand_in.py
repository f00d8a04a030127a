"""What the replay's stand-in actions do: each action.yml here runs one function of this script
with $REPLAY_PYTHON (a CPython of this machine; standard library only), its inputs in INPUT_*.
setup-python makes a venv of this machine's CPython of that version (a copy of one made once per
CPython under $REPLAY_VENVS: ensurepip costs each new venv ~4 CPU-s), the artifact actions copy
folders under $REPLAY_ARTIFACTS, attest hashes its subjects (nothing is signed), and the PyPI
publish action uploads with twine to the replay's local index."""

import fcntl
import fnmatch
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path


def inp(name: str, default: str = "") -> str:
    return os.environ.get(f"INPUT_{name.upper().replace('-', '_')}", "") or default


def fail(message: str) -> None:
    print(f"::error::{message}", flush=True)
    sys.exit(1)


def setup_python() -> None:
    version = inp("python-version")
    found = json.loads(os.environ["REPLAY_PYTHONS"]).get(version)
    if not found:
        fail(f"setup-python stand-in: CPython {version} is not on this machine")
    target = Path(os.environ["RUNNER_TEMP"]) / f"python-{version}"
    copy_venv(found, target)
    with open(os.environ["GITHUB_PATH"], "a") as path:
        path.write(f"{target / 'bin'}\n")
    print(f"setup-python stand-in: a venv of {found}")


def copy_venv(python: str, target: Path) -> None:
    """target: a copy of a venv of python with pip, made once under $REPLAY_VENVS (named by the
    interpreter's real path); its scripts, activate and pyvenv.cfg name target."""
    real = os.path.realpath(python)
    template = Path(os.environ["REPLAY_VENVS"]) / hashlib.sha256(real.encode()).hexdigest()[:16]
    ready = template.with_suffix(".ready")
    template.parent.mkdir(parents=True, exist_ok=True)
    with open(template.with_suffix(".lock"), "w") as lock:  # two replays may want it at once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not ready.exists():
            subprocess.run([python, "-m", "venv", "--clear", str(template)], check=True)
            ready.touch()
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(template, target, symlinks=True)
    old, new = str(template).encode(), str(target).encode()
    for file in [target / "pyvenv.cfg", *(target / "bin").iterdir()]:
        text = file.read_bytes() if file.is_file() and not file.is_symlink() else b""
        if old in text:
            file.write_bytes(text.replace(old, new))


def upload_artifact() -> None:
    files = sorted(Path(p) for p in glob.glob(inp("path"), recursive=True) if Path(p).is_file())
    if not files and inp("if-no-files-found", "warn") == "error":
        fail(f"upload-artifact stand-in: no files match {inp('path')}")
    folder = Path(os.environ["REPLAY_ARTIFACTS"]) / inp("name", "artifact")
    folder.mkdir(parents=True, exist_ok=True)
    for file in files:
        shutil.copy2(file, folder / file.name)
    print(f"upload-artifact stand-in: {len(files)} file(s) into {folder}")


def download_artifact() -> None:
    store = Path(os.environ["REPLAY_ARTIFACTS"])
    names = sorted(p.name for p in store.iterdir()) if store.is_dir() else []
    target = Path(inp("path", "."))
    if inp("name"):
        if inp("name") not in names:
            fail(f"download-artifact stand-in: no artifact {inp('name')}")
        chosen, flat = [inp("name")], True
    else:
        chosen = [n for n in names if fnmatch.fnmatch(n, inp("pattern", "*"))]
        flat = inp("merge-multiple") == "true"
    for name in chosen:
        dest = target if flat else target / name
        dest.mkdir(parents=True, exist_ok=True)
        for file in (store / name).iterdir():
            shutil.copy2(file, dest / file.name)
    print(f"download-artifact stand-in: {', '.join(chosen) or 'nothing'} into {target}")


def attest() -> None:
    subjects = sorted(Path(p) for p in glob.glob(inp("subject-path")) if Path(p).is_file())
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in subjects}
    Path(os.environ["REPLAY_ATTESTATIONS"]).write_text(json.dumps(digests, indent=1) + "\n")
    print(f"attest stand-in: {len(subjects)} subjects hashed, not signed (GitHub only)")


def pypi_publish() -> None:
    files = sorted(str(p) for p in Path(inp("packages-dir", "dist")).iterdir())
    subprocess.run([os.environ["REPLAY_TWINE"], "upload", "--non-interactive", "--repository-url",
                    os.environ["REPLAY_UPLOAD_URL"], "-u", "replay", "-p", "replay", *files], check=True)
    print(f"pypi-publish stand-in: twine upload to the local index {os.environ['REPLAY_UPLOAD_URL']}")


if __name__ == "__main__":
    {"setup-python": setup_python, "upload-artifact": upload_artifact, "download-artifact": download_artifact,
     "attest": attest, "gh-action-pypi-publish": pypi_publish}[sys.argv[1]]()
