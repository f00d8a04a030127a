"""The pipeline as one tool: `python -m ci <verb>` (see `python -m ci --help`).

Each verb is declared once, by the @verb decorator on its handler: its name,
its arguments and whether it runs in the dev env (torch, build, test and
pipeline tools), which such a verb creates on first use and re-runs itself
inside, so a fresh machine needs only CPython 3.11. The others run in whatever
Python calls them, as cibuildwheel and the workflows do; modules are imported
lazily so that `repair` and `install-torch` work with the standard library
alone (cibuildwheel runs them on CPython 3.10). Handlers take typed keyword
arguments and pass typed values into the library: no argparse namespace
leaves this module.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import EXIT_CODES, CheckFailed, PipelineError
from .util import envs, shared_files
from .util.envs import ROOT, log

# Set TORCH_SEGMENT_OPS_USE_CURRENT_ENV=1 to run dev-env verbs in the calling Python instead
# (the workflows do, after installing ci/requirements/*.txt).
USE_CURRENT_ENV = "TORCH_SEGMENT_OPS_USE_CURRENT_ENV"


def arg(*flags: str, **options) -> tuple[tuple[str, ...], dict]:
    """One argparse argument: the flags and add_argument's options."""
    return flags, options


@dataclass(frozen=True)
class OneOf:
    """A group of arguments of which at most one (exactly one if required) may be given."""

    args: tuple
    required: bool = True


@dataclass(frozen=True)
class Verb:
    name: str
    handler: Callable[..., int]
    args: tuple
    dev_env: bool  # runs inside the dev env (created on first use)
    passthrough: bool  # the arguments it does not know go to its tool (pytest, cibuildwheel) as `rest`


VERBS: dict[str, Verb] = {}


def verb(name: str, *args, dev_env: bool = False, passthrough: bool = False):
    def register(handler: Callable[..., int]) -> Callable[..., int]:
        VERBS[name] = Verb(name, handler, args, dev_env, passthrough)
        return handler
    return register


def dev_environ(dev: envs.Env) -> dict[str, str]:
    env = dict(os.environ, PATH=f"{dev.path / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("PYTHONPATH", None)  # tests must import the installed package
    return env


def install_package(env: envs.Env) -> None:
    log("building and installing torch-segment-ops into the dev env ...")
    env.pip("install", "--no-build-isolation", "--no-deps", "--force-reinstall", str(ROOT))


@verb("test", dev_env=True, passthrough=True)
def cmd_test(rest: list[str]) -> int:
    """Build and install the extension into the dev env, then run pytest there (extra args go to pytest)."""
    dev = envs.dev_env()
    install_package(dev)
    if not rest:
        return whole_suite(dev)
    log(f"pytest {' '.join(rest)}")
    return subprocess.run([str(dev.bin("pytest")), *rest], cwd=ROOT, env=dev_environ(dev)).returncode


def whole_suite(dev: envs.Env) -> int:
    """The end-to-end tests and the unit tests as two pytest runs side by side: the unit tests keep one
    core busy, the lanes leave one idle for minutes at a time. The unit run's output follows the other's."""
    pytest = str(dev.bin("pytest"))
    shared_files.share_once()
    with tempfile.TemporaryDirectory(prefix="torch-segment-ops-unit-tests-") as tmp:
        output = Path(tmp) / "output.txt"
        with output.open("w") as sink:
            unit = subprocess.Popen([pytest, "-m", "not slow", "--basetemp", str(Path(tmp) / "basetemp")], cwd=ROOT,
                                    env=dev_environ(dev), stdout=sink, stderr=subprocess.STDOUT)
            log('pytest -m slow, beside pytest -m "not slow" (its output comes after)')
            try:
                e2e = subprocess.run([pytest, "-m", "slow"], cwd=ROOT, env=dev_environ(dev)).returncode
            finally:
                code = unit.wait()
        print(f"\n---- the unit tests (pytest -m \"not slow\"), run beside the end-to-end tests ----\n"
              f"{output.read_text()}", flush=True)
    return e2e or code


@verb("demo", dev_env=True)
def cmd_demo() -> int:
    """Build and install the extension into the dev env and run a short demo."""
    dev = envs.dev_env()
    install_package(dev)
    return subprocess.run([str(dev.python), str(ROOT / "ci" / "scripts" / "demo.py")], cwd="/").returncode


@verb("bench",
      arg("--quick", action="store_true", help="tiny shapes; writes nothing"),
      arg("--pipeline", action="store_true", help="install time, wheel sizes, compile counts"),
      arg("--abi", action="store_true", help="the stable-ABI build vs the ATen build, side by side"),
      dev_env=True)
def cmd_bench(quick: bool, pipeline: bool, abi: bool) -> int:
    """Run benchmarks/bench_ops.py against torch-scatter and stock torch (writes benchmarks/RESULTS.md), or
    with --pipeline bench_pipeline.py, or with --abi bench_abi.py (the stable build vs the ATen build)."""
    dev = envs.dev_env()
    if pipeline:
        return subprocess.run([str(dev.python), str(ROOT / "benchmarks" / "bench_pipeline.py")]).returncode
    if abi:
        extra = ["--quick"] if quick else []
        return subprocess.run([str(dev.python), str(ROOT / "benchmarks" / "bench_abi.py"), *extra]).returncode
    from .dev import bench

    install_package(dev)
    why_not = bench.install_peer(dev)  # torch-scatter, the peer users compare with
    extra = ["--quick"] if quick else ["--out", str(ROOT / "benchmarks" / "RESULTS.md")]
    environ = dict(os.environ, **({bench.SKIPPED: why_not} if why_not else {}))
    return subprocess.run([str(dev.python), str(ROOT / "benchmarks" / "bench_ops.py"), *extra], cwd="/",
                          env=environ).returncode


@verb("local",
      arg("--out", help="default: wheelhouse/ (wheelhouse/<arch>/ with --arch)"),
      arg("--torch", nargs="*", help="torch minors (default: ci/declaration/matrix.toml [local])"),
      arg("--arch", choices=["native", "aarch64", "macos-arm64"], default="native",
          help="aarch64: the Linux arm64 wheel under qemu emulation (root, binfmt_misc); "
               "macos-arm64: the macOS wheel cross-built, repaired and audited here (not run)"),
      arg("--matrix", action="store_true",
          help="every declared torch in one wheel, smoke-tested on the CPython x torch cells of "
               "ci/declaration/matrix.toml [local] (torch builds not on disk come from the registry: GBs)"),
      arg("--newest", action="store_true",
          help="the op test suite under CPython 3.14/3.15 (Debian sid, in a cached rootfs) and a free-threaded "
               "CPython built here, each with the oldest and newest torch for it (root; GBs of torch, cached)"),
      arg("--cibuildwheel", action="store_true",
          help="the real cibuildwheel Linux build in a local container (root; stand-in image)"),
      dev_env=True)
def cmd_local(out: str | None, torch: list[str] | None, arch: str, matrix: bool, newest: bool,
              cibuildwheel: bool) -> int:
    """The main job: build, repair, audit, merge and smoke-test the wheels for this machine."""
    from .lanes import local

    shared_files.share_once()
    if cibuildwheel:
        from .lanes import container

        print(container.run(Path(out) if out else ROOT / "wheelhouse" / "cibuildwheel", torch[0] if torch else None))
    elif matrix:
        print(local.run(Path(out) if out else ROOT / "wheelhouse" / "matrix", cells="matrix"))
    elif newest:
        print(local.run(Path(out) if out else ROOT / "wheelhouse" / "newest", cells="newest"))
    else:
        print(local.run(Path(out) if out else ROOT / "wheelhouse" / ("" if arch == "native" else arch), torch, arch))
    return 0


@verb("report",
      arg("dir", nargs="?", default=str(ROOT / "wheelhouse")),
      arg("--doc", help="also write the documentation page, e.g. docs/verification.md"),
      dev_env=True)
def cmd_report(dir: str, doc: str | None) -> int:
    """Every release cell with how it was verified here, from the lanes' records under DIR (writes report.md/.json)."""
    from .lanes import report

    print(report.report(Path(dir), Path(doc) if doc else None))
    return 0


@verb("replay",
      arg("workflow", nargs="?", default="release.yml", help="a file in .github/workflows"),
      arg("--out", default=str(ROOT / "wheelhouse" / "replay")),
      dev_env=True)
def cmd_replay(workflow: str, out: str) -> int:
    """Run a workflow's jobs here, from its YAML, with stand-ins for what only GitHub has."""
    from .lanes import replay

    print(replay.run(workflow, Path(out)))
    return 0


@verb("matrix",
      arg("--scope", choices=["pr", "release", "next"], default="pr"),
      arg("--kind", choices=["build", "verify", "merge", "table"], default="build"),
      arg("--github-output", action="store_true", help="write build/merge/verify to $GITHUB_OUTPUT"))
def cmd_matrix(scope: str, kind: str, github_output: bool) -> int:
    """Print a GitHub Actions matrix (JSON) derived from the declaration, or write all of them to $GITHUB_OUTPUT."""
    from .declaration import matrix

    if github_output:
        matrix.write_github_output(scope, Path(os.environ["GITHUB_OUTPUT"]))
    else:
        print(matrix.github_matrix(scope, kind) if kind != "table" else matrix.support_table())
    return 0


@verb("install-torch")
def cmd_install_torch() -> int:
    """Install torch==$TORCH_SEGMENT_OPS_TORCH_PIN (from $TORCH_SEGMENT_OPS_TORCH_INDEX if set) here
    (cibuildwheel hooks)."""
    envs.install_torch_here()
    return 0


@verb("install-cuda", arg("dir"))
def cmd_install_cuda(dir: str) -> int:
    """Install the CUDA toolkits this machine's wheel is built with into DIR/<major> (cibuildwheel's
    before-build; setup.py reads them from $TORCH_SEGMENT_OPS_CUDA_DIR)."""
    from .stages import cuda

    print(cuda.install(Path(dir)))
    return 0


@verb("gpu-check",
      arg("--wheel", help="the wheel to check (default: the linux wheel in wheelhouse/)"),
      arg("--out", default="wheelhouse/gpu-check", help="where gpu-check.md and GPU.md go"),
      arg("--quick", action="store_true", help="the benchmark's tiny shapes only"),
      arg("--install", action="store_true", help="first install torch==$TORCH_SEGMENT_OPS_TORCH_PIN and the test "
          "requirements here (a fresh GPU runner)"))
def cmd_gpu_check(wheel: str | None, out: str, quick: bool, install: bool) -> int:
    """On a machine with a CUDA GPU: install the wheel into this Python (no deps), run the GPU tests, the
    op suite, compute-sanitizer memcheck and the GPU benchmark; writes gpu-check.md and GPU.md to --out."""
    from .lanes import gpu

    return gpu.run(Path(wheel) if wheel else None, Path(out), quick, install)


@verb("gpu-runner")
def cmd_gpu_runner() -> int:
    """The release's GPU gate: print label=<the declared GPU runner> and torch=<pin> (for $GITHUB_OUTPUT);
    fail, naming the key, when none is declared."""
    from .publish import release

    for key, value in release.gpu_runner().items():
        print(f"{key}={value}")
    return 0


@verb("cibuildwheel", passthrough=True)
def cmd_cibuildwheel(rest: list[str]) -> int:
    """Run cibuildwheel (its arguments follow) with SOURCE_DATE_EPOCH set from the last commit."""
    from .stages import build

    return build.cibuildwheel(rest)


@verb("sdist", arg("--out", default="dist"), arg("--no-isolation", action="store_true"), dev_env=True)
def cmd_sdist(out: str, no_isolation: bool) -> int:
    """Build the sdist."""
    from .stages import build

    print(build.sdist(Path(out), isolated=not no_isolation))
    return 0


@verb("verify", arg("wheel_dir"))
def cmd_verify(wheel_dir: str) -> int:
    """A verify cell: install the pinned torch and the one wheel in WHEEL_DIR here, then run the smoke check."""
    from .stages import smoke

    result = smoke.verify_here(Path(wheel_dir))
    print(result.output)
    return 0 if result.ok else CheckFailed.return_code


@verb("check-tag",
      arg("tag"),
      arg("--on-branch", help="also require the checked-out commit to be on this ref (origin/main)"))
def cmd_check_tag(tag: str, on_branch: str | None) -> int:
    """Fail unless the git tag equals v<package version> (and, with --on-branch, its commit is on that branch)."""
    from .publish import release

    release.check_tag(tag, on_branch)
    print(f"{tag} matches the package version" + (f" and is on {on_branch}" if on_branch else ""))
    return 0


@verb("release-guard", arg("--index-url", help="the simple index to publish to (default: the one pip uses here)"))
def cmd_release_guard(index_url: str | None) -> int:
    """Fail unless our distribution name is free on the index or all its releases name our repository."""
    from .publish import guard

    print(guard.run(index_url, os.environ.get("GITHUB_REPOSITORY")))
    return 0


@verb("collect", arg("artifacts"), arg("out"), arg("--sums", action="store_true"))
def cmd_collect(artifacts: str, out: str, sums: bool) -> int:
    """Gather final wheels and sdists from downloaded artifacts (with --sums: SHA256SUMS and notes)."""
    from .publish import release

    for path in release.collect(Path(artifacts), Path(out), sums):
        print(path)
    return 0


@verb("lint", dev_env=True)
def cmd_lint() -> int:
    """ruff, actionlint and zizmor (offline)."""
    from .dev import lint

    return lint.run()


@verb("lock")
def cmd_lock() -> int:
    """Regenerate the hash-pinned ci/requirements/*.lock files from ci/requirements/*.txt (uv)."""
    from .dev import lock

    for path in lock.write():
        print(path)
    return 0


@verb("download",
      arg("--platform", default="native",
          help="linux-x86_64, linux-aarch64, macos-arm64, a platform tag, or native (this machine)"),
      arg("--python", help="CPython version, e.g. 3.12 (default: this interpreter's)"),
      arg("--torch", help="torch version the wheel must support (default: the installed one)"),
      arg("--version", help="the torch-segment-ops version(s) to choose from: 0.1.0 (exactly) or a specifier "
          "such as '>=0.1,<0.3' (default: any; with --release vX.Y.Z: X.Y.Z)"),
      arg("--pre", action="store_true", help="allow pre-releases (as pip's --pre)"),
      OneOf((arg("--release", metavar="TAG", help="a GitHub release tag (with --repo)"),
             arg("--run", metavar="RUN_ID", help="a GitHub Actions run id (with --repo; needs a token)"),
             arg("--index", metavar="URL", help="a simple (PEP 503/691) index URL"))),
      arg("--repo", help="OWNER/NAME on GitHub"),
      arg("-o", "--out", default=".", help="where to save the wheel"))
def cmd_download(platform: str, python: str | None, torch: str | None, version: str | None, pre: bool,
                 release: str | None, run: str | None, index: str | None, repo: str | None, out: str) -> int:
    """Download the wheel that fits a platform/CPython/torch from a release, a CI run or an index; verify it."""
    from .publish import download, pick

    target = pick.Target(platform, python or pick.default_python(), torch or installed_torch(),
                         version=version, pre=pre)
    download.run(download.Where(release=release, run=run, index=index, repo=repo), target, Path(out))
    return 0


def installed_torch() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


@verb("index", arg("dist"), arg("out"))
def cmd_index(dist: str, out: str) -> int:
    """Write a static PEP 503/691/658 index of the wheels and sdists in DIST to OUT."""
    from .publish import index

    print(index.build_index(Path(dist), Path(out)))
    return 0


@verb("build",
      arg("--torch", required=True, help="torch minor, e.g. 2.13"),
      arg("--python", help="CPython to build with (default: ci/declaration/matrix.toml [local])"),
      arg("--out", default="dist"),
      arg("--project", default=str(ROOT), help="the extension's source tree (default: this one)"),
      dev_env=True)
def cmd_build(torch: str, python: str | None, out: str, project: str) -> int:
    """Build the wheel against one torch minor on this machine."""
    from .stages import build

    print(build.build(torch, Path(out), python, source=Path(project).resolve()))
    return 0


@verb("repair",
      arg("wheel"),
      arg("-w", required=True, help="destination folder"),
      arg("--plat", help="auditwheel --plat (default: the best it finds)"))
def cmd_repair(wheel: str, w: str, plat: str | None) -> int:
    """auditwheel / delocate with torch's libraries excluded (cibuildwheel's repair-wheel-command)."""
    from .stages import repair

    print(repair.repair(Path(wheel), Path(w), plat=plat))
    return 0


@verb("audit", arg("wheels", nargs="+"), arg("--platform", help="the exact platform tag expected"), dev_env=True)
def cmd_audit(wheels: list[str], platform: str | None) -> int:
    """Fail wheels that graft torch, have wrong tags/metadata, are unstripped or too big, or fail the gates."""
    from .stages import audit

    failed = 0
    for wheel in wheels:
        problems = audit.audit(Path(wheel), platform)
        print(f"{'FAIL' if problems else 'ok  '} {Path(wheel).name}")
        for problem in problems:
            print(f"     - {problem}")
        failed += bool(problems)
    return CheckFailed.return_code if failed else 0


@verb("merge", arg("wheels", nargs="+"), arg("-w", required=True, help="destination folder"), dev_env=True)
def cmd_merge(wheels: list[str], w: str) -> int:
    """Combine per-torch wheels of one platform into one wheel."""
    from .stages import merge

    print(merge.merge([Path(wheel) for wheel in wheels], Path(w)))
    return 0


@verb("smoke",
      arg("wheel"),
      arg("--python", help="CPython of the env (default: ci/declaration/matrix.toml [local] python)"),
      arg("--torch", required=True, help="exact torch version, e.g. 2.13.0"),
      arg("--check", help="the project's smoke script (default: ci/scripts/smoke_check.py)"),
      arg("--op-tests", action="store_true", help="also run tests/ops against the installed wheel"),
      dev_env=True)
def cmd_smoke(wheel: str, python: str | None, torch: str, check: str | None, op_tests: bool) -> int:
    """Install a wheel into a clean env over a cached torch and run the smoke check from outside the tree."""
    from .declaration import matrix
    from .stages import smoke

    python = python or matrix.declaration().local.python
    result = smoke.smoke(Path(wheel), python, torch, op_tests=op_tests, check=Path(check) if check else smoke.CHECK)
    print(result.output)
    return 0 if result.ok else CheckFailed.return_code


def parser() -> argparse.ArgumentParser:
    codes = ", ".join(f"{code}: {what}" for code, what in EXIT_CODES.items())
    p = argparse.ArgumentParser(prog="python -m ci", description=__doc__.splitlines()[0],
                                epilog=f"exit codes: {codes}")
    p.add_argument("--debug", action="store_true", help="print the traceback of a pipeline error too")
    subs = p.add_subparsers(dest="verb", required=True)
    for v in VERBS.values():
        sub = subs.add_parser(v.name, help=v.handler.__doc__, description=v.handler.__doc__)
        for spec in v.args:
            if isinstance(spec, OneOf):
                group = sub.add_mutually_exclusive_group(required=spec.required)
                for flags, options in spec.args:
                    group.add_argument(*flags, **options)
            else:
                sub.add_argument(*spec[0], **spec[1])
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = parser()
    args, rest = p.parse_known_args(argv)
    v = VERBS[args.verb]
    if rest and not v.passthrough:
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    options = {key: value for key, value in vars(args).items() if key not in ("verb", "debug")}
    if v.passthrough:
        options["rest"] = rest
    try:
        if v.dev_env and os.environ.get(USE_CURRENT_ENV) != "1":
            dev = envs.dev_env()
            environ = dict(dev_environ(dev), **{USE_CURRENT_ENV: "1"})
            return subprocess.run([str(dev.python), "-m", "ci", *argv], cwd=ROOT, env=environ).returncode
        return v.handler(**options)
    except PipelineError as error:  # the one place a pipeline error becomes a message and an exit code
        if args.debug:
            traceback.print_exception(error)
        print(error, file=sys.stderr)
        return error.return_code
