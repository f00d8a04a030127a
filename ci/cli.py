"""Command line of the pipeline: one verb per stage (``python -m ci --help``)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from . import envs
from .envs import ROOT, log


def cmd_test(args: argparse.Namespace) -> int:
    """Build and install the extension into the dev env, then run pytest there."""
    dev = envs.dev_env()
    install_package(dev)
    pytest_args = args.pytest_args or ["-q"]
    log(f"pytest {' '.join(pytest_args)}")
    return subprocess.run([str(dev.bin("pytest")), *pytest_args], cwd=ROOT, env=test_environ()).returncode


def cmd_demo(args: argparse.Namespace) -> int:
    """Build and install the extension into the dev env and run a short demo."""
    dev = envs.dev_env()
    install_package(dev)
    return subprocess.run([str(dev.python), str(ROOT / "ci" / "demo.py")], cwd="/").returncode


def install_package(env: envs.Env) -> None:
    log("building and installing torch-segment into the dev env ...")
    env.pip("install", "--no-build-isolation", "--no-deps", "--force-reinstall", str(ROOT))


def test_environ() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # tests must import the installed package
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ci", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    test = verbs.add_parser("test", help=cmd_test.__doc__)
    test.set_defaults(func=cmd_test)
    demo = verbs.add_parser("demo", help=cmd_demo.__doc__)
    demo.set_defaults(func=cmd_demo)
    args, extra = parser.parse_known_args(argv)
    if extra and args.verb != "test":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.pytest_args = extra  # `test` passes unknown arguments to pytest
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
