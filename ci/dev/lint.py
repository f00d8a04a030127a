"""`lint`: ruff on the Python, actionlint (with shellcheck for the run: scripts, from
ci/requirements/lint.txt) and zizmor (offline, pedantic persona) on the workflows."""

from __future__ import annotations

import shutil
import subprocess
import sys

from ..util.envs import ROOT

WORKFLOWS = ROOT / ".github" / "workflows"


def commands() -> list[list[str]]:
    return [
        ["ruff", "check", str(ROOT)],
        # shellcheck named explicitly: without it actionlint silently skips the run: scripts
        ["actionlint", f"-shellcheck={shutil.which('shellcheck') or 'shellcheck'}",
         *sorted(str(p) for p in WORKFLOWS.glob("*.yml"))],
        ["zizmor", "--offline", "--no-progress", "--persona", "pedantic", "--config",
         str(ROOT / ".github" / "zizmor.yml"), str(WORKFLOWS)],
    ]


def run() -> int:
    failed = 0
    if shutil.which("shellcheck") is None:
        print("shellcheck is not installed (pip install -r ci/requirements/lint.txt)", file=sys.stderr)
        failed += 1
    for cmd in commands():
        if shutil.which(cmd[0]) is None:
            print(f"{cmd[0]} is not installed (pip install -r ci/requirements/lint.txt)", file=sys.stderr)
            failed += 1
            continue
        print(f"$ {' '.join(cmd)}", flush=True)
        failed += subprocess.run(cmd, cwd=ROOT).returncode != 0
    return 1 if failed else 0
