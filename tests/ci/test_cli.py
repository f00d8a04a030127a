"""The CLI boundary: one exit code per kind of error, the message once, the traceback only with --debug."""

import subprocess
import sys

import pytest

from ci import cli, errors
from ci.util.envs import ROOT


def ci(*args):
    return subprocess.run([sys.executable, "-m", "ci", *args], cwd=ROOT, capture_output=True, text=True,
                           env={"PATH": "/usr/bin:/bin", "TORCH_SEGMENT_OPS_USE_CURRENT_ENV": "1"})


@pytest.mark.parametrize("args, code, message", [
    (["install-cuda", "/tmp/x", "--help"], 0, "usage"),
    (["collect", "/nonexistent", "/tmp/out"], errors.NothingToDo.return_code, "collect: no final wheels"),
    (["gpu-runner"], errors.PipelineError.return_code, "release: no GPU runner is declared"),
])
def test_each_kind_of_error_has_its_exit_code_and_one_message(args, code, message):
    proc = ci(*args)
    assert proc.returncode == code, proc.stderr
    assert message in proc.stdout + proc.stderr and "Traceback" not in proc.stderr


def test_a_configuration_error_and_debug_shows_the_traceback(monkeypatch, capsys):
    from ci.declaration import matrix

    def undeclared(minor):
        raise matrix.invalid("torch", f"torch {minor} is not declared")

    from ci.publish import release

    monkeypatch.setattr(release, "check_tag", lambda tag, on_branch: undeclared("9.9"))
    assert cli.main(["check-tag", "v0"]) == errors.ConfigurationError.return_code == 2
    assert capsys.readouterr().err == "ci/declaration/matrix.toml: torch: torch 9.9 is not declared\n"
    assert cli.main(["--debug", "check-tag", "v0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "undeclared" in err and err.endswith("torch 9.9 is not declared\n")


def test_the_exit_codes_are_distinct_and_documented():
    kinds = [errors.PipelineError, errors.ConfigurationError, errors.NothingToDo, errors.CheckFailed,
             errors.NetworkError]
    assert sorted(k.return_code for k in kinds) == sorted(set(errors.EXIT_CODES) - {0})
    assert "exit codes: 0: success" in ci("--help").stdout
