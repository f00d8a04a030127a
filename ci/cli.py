"""The pipeline as one tool: `python -m ci <verb>` (see `python -m ci --help`).

Verbs that need the dev env (torch, build, test and pipeline tools; see
NEEDS_DEV_ENV) create it on first use and re-run themselves inside it, so a
fresh machine needs only CPython 3.11. The others (matrix, repair,
install-torch, verify, check-tag, release-guard, collect, download, index,
cibuildwheel) run in whatever Python calls them, as cibuildwheel and the workflows do;
modules are imported lazily so that `repair` and `install-torch` work with
the standard library alone (cibuildwheel runs them on CPython 3.10).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import traceback
from pathlib import Path

from . import envs
from .envs import ROOT, log
from .errors import EXIT_CODES, CheckFailed, PipelineError

# Verbs that run inside the dev env, which they create on first use. Set
# TORCH_SEGMENT_OPS_USE_CURRENT_ENV=1 to run them in the calling Python instead
# (the workflows do, after installing ci/requirements-*.txt).
NEEDS_DEV_ENV = {"test", "demo", "bench", "local", "build", "audit", "merge", "smoke", "lint", "sdist", "replay",
                 "report"}


def dev_environ(dev: envs.Env) -> dict[str, str]:
    env = dict(os.environ, PATH=f"{dev.path / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("PYTHONPATH", None)  # tests must import the installed package
    return env


def install_package(env: envs.Env) -> None:
    log("building and installing torch-segment-ops into the dev env ...")
    env.pip("install", "--no-build-isolation", "--no-deps", "--force-reinstall", str(ROOT))


def cmd_test(args) -> int:
    """Build and install the extension into the dev env, then run pytest there (extra args go to pytest)."""
    dev = envs.dev_env()
    install_package(dev)
    log(f"pytest {' '.join(args.rest)}")
    return subprocess.run([str(dev.bin("pytest")), *args.rest], cwd=ROOT, env=dev_environ(dev)).returncode


def cmd_demo(args) -> int:
    """Build and install the extension into the dev env and run a short demo."""
    dev = envs.dev_env()
    install_package(dev)
    return subprocess.run([str(dev.python), str(ROOT / "ci" / "demo.py")], cwd="/").returncode


def cmd_bench(args) -> int:
    """Run benchmarks/bench_ops.py (writes benchmarks/RESULTS.md), or with --pipeline bench_pipeline.py,
    or with --abi bench_abi.py (the stable build vs the ATen build, side by side)."""
    dev = envs.dev_env()
    if args.pipeline:
        return subprocess.run([str(dev.python), str(ROOT / "benchmarks" / "bench_pipeline.py")]).returncode
    if args.abi:
        extra = ["--quick"] if args.quick else []
        return subprocess.run([str(dev.python), str(ROOT / "benchmarks" / "bench_abi.py"), *extra]).returncode
    install_package(dev)
    extra = ["--quick"] if args.quick else ["--out", str(ROOT / "benchmarks" / "RESULTS.md")]
    return subprocess.run([str(dev.python), str(ROOT / "benchmarks" / "bench_ops.py"), *extra], cwd="/").returncode


def cmd_local(args) -> int:
    """The main job: build, repair, audit, merge and smoke-test the wheels for this machine."""
    from . import local

    if args.cibuildwheel:
        from . import container

        out = Path(args.out) if args.out else ROOT / "wheelhouse" / "cibuildwheel"
        print(container.run(out, args.torch[0] if args.torch else None))
        return 0
    if args.matrix:
        print(local.run(Path(args.out) if args.out else ROOT / "wheelhouse" / "matrix", cells="matrix"))
        return 0
    out = Path(args.out) if args.out else ROOT / "wheelhouse" / ("" if args.arch == "native" else args.arch)
    print(local.run(out, args.torch, args.arch))
    return 0


def cmd_report(args) -> int:
    """Every release cell with how it was verified here, from the lanes' records under DIR (writes report.md/.json)."""
    from . import report

    print(report.report(Path(args.dir), Path(args.doc) if args.doc else None))
    return 0


def cmd_replay(args) -> int:
    """Run a workflow's jobs here, from its YAML, with stand-ins for what only GitHub has."""
    from . import replay

    print(replay.run(args.workflow, Path(args.out)))
    return 0


def cmd_matrix(args) -> int:
    """Print a GitHub Actions matrix (JSON) derived from ci/matrix.toml, or write all of them to $GITHUB_OUTPUT."""
    from . import matrix

    if args.github_output:
        matrix.write_github_output(args.scope, Path(os.environ["GITHUB_OUTPUT"]))
    else:
        print(matrix.github_matrix(args.scope, args.kind) if args.kind != "table" else matrix.support_table())
    return 0


def cmd_install_torch(args) -> int:
    """Install torch==$TORCH_SEGMENT_OPS_TORCH_PIN (from $TORCH_SEGMENT_OPS_TORCH_INDEX if set) here
    (cibuildwheel hooks)."""
    envs.install_torch_here()
    return 0


def cmd_install_cuda(args) -> int:
    """Install the CUDA toolkits this machine's wheel is built with into DIR/<major> (cibuildwheel's
    before-build; setup.py reads them from $TORCH_SEGMENT_OPS_CUDA_DIR)."""
    from . import cuda

    print(cuda.install(Path(args.dir)))
    return 0


def cmd_gpu_check(args) -> int:
    """On a machine with a CUDA GPU: install the wheel into this Python (no deps), run the GPU tests, the
    op suite, compute-sanitizer memcheck and the GPU benchmark; writes gpu-check.md and GPU.md to --out."""
    from . import gpu

    return gpu.run(Path(args.wheel) if args.wheel else None, Path(args.out), args.quick, args.install)


def cmd_cibuildwheel(args) -> int:
    """Run cibuildwheel (its arguments follow) with SOURCE_DATE_EPOCH set from the last commit."""
    from . import build

    return build.cibuildwheel(args.rest)


def cmd_sdist(args) -> int:
    """Build the sdist."""
    from . import build

    print(build.sdist(Path(args.out), isolated=not args.no_isolation))
    return 0


def cmd_verify(args) -> int:
    """A verify cell: install the pinned torch and the one wheel in WHEEL_DIR here, then run the smoke check."""
    from . import smoke

    result = smoke.verify_here(Path(args.wheel_dir))
    print(result.output)
    return 0 if result.ok else 1


def cmd_gpu_runner(args) -> int:
    """The release's GPU gate: print label=<the declared GPU runner> and torch=<pin> (for $GITHUB_OUTPUT);
    fail, naming the key, when none is declared."""
    from . import release

    for key, value in release.gpu_runner().items():
        print(f"{key}={value}")
    return 0


def cmd_check_tag(args) -> int:
    """Fail unless the git tag equals v<package version> (and, with --on-branch, its commit is on that branch)."""
    from . import release

    release.check_tag(args.tag, args.on_branch)
    print(f"{args.tag} matches the package version" + (f" and is on {args.on_branch}" if args.on_branch else ""))
    return 0


def cmd_release_guard(args) -> int:
    """Fail unless our distribution name is free on the index or all its releases name our repository."""
    from . import guard

    print(guard.run(args.index_url, os.environ.get("GITHUB_REPOSITORY")))
    return 0


def cmd_collect(args) -> int:
    """Gather final wheels and sdists from downloaded artifacts (with --sums: SHA256SUMS and notes)."""
    from . import release

    for path in release.collect(Path(args.artifacts), Path(args.out), args.sums):
        print(path)
    return 0


def cmd_download(args) -> int:
    """Download the wheel that fits a platform/CPython/torch from a release, a CI run or an index; verify it."""
    from . import download, pick

    target = pick.Target(args.platform, args.python or pick.default_python(), args.torch or installed_torch(),
                         version=args.version, pre=args.pre)
    download.run(args, target, Path(args.out))
    return 0


def installed_torch() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def cmd_index(args) -> int:
    """Write a static PEP 503/691/658 index of the wheels and sdists in DIST to OUT."""
    from . import index

    print(index.build_index(Path(args.dist), Path(args.out)))
    return 0


def cmd_lock(args) -> int:
    """Regenerate the hash-pinned ci/requirements-*.lock files from ci/requirements-*.txt (uv)."""
    from . import lock

    for path in lock.write():
        print(path)
    return 0


def cmd_lint(args) -> int:
    """ruff, actionlint and zizmor (offline)."""
    from . import lint

    return lint.run()


def cmd_build(args) -> int:
    """Build the wheel against one torch minor on this machine."""
    from . import build

    print(build.build(args.torch, Path(args.out), args.python, source=Path(args.project).resolve()))
    return 0


def cmd_repair(args) -> int:
    """auditwheel / delocate with torch's libraries excluded (cibuildwheel's repair-wheel-command)."""
    from . import repair

    print(repair.repair(Path(args.wheel), Path(args.w), plat=args.plat))
    return 0


def cmd_audit(args) -> int:
    """Fail wheels that graft torch, have wrong tags/metadata, are unstripped or too big, or fail the gates."""
    from . import audit

    failed = 0
    for wheel in args.wheels:
        problems = audit.audit(Path(wheel), args.platform)
        print(f"{'FAIL' if problems else 'ok  '} {Path(wheel).name}")
        for problem in problems:
            print(f"     - {problem}")
        failed += bool(problems)
    return CheckFailed.return_code if failed else 0


def cmd_merge(args) -> int:
    """Combine per-torch wheels of one platform into one wheel."""
    from . import merge

    print(merge.merge([Path(w) for w in args.wheels], Path(args.w)))
    return 0


def cmd_smoke(args) -> int:
    """Install a wheel into a clean env over a cached torch and run the smoke check from outside the tree."""
    from . import matrix, smoke

    python = args.python or matrix.declaration().local.python
    result = smoke.smoke(Path(args.wheel), python, args.torch, op_tests=args.op_tests,
                         check=Path(args.check) if args.check else smoke.CHECK)
    print(result.output)
    return 0 if result.ok else 1


def parser() -> argparse.ArgumentParser:
    codes = ", ".join(f"{code}: {what}" for code, what in EXIT_CODES.items())
    p = argparse.ArgumentParser(prog="python -m ci", description=__doc__.splitlines()[0],
                                epilog=f"exit codes: {codes}")
    p.add_argument("--debug", action="store_true", help="print the traceback of a pipeline error too")
    verbs = p.add_subparsers(dest="verb", required=True)

    def verb(name, func):
        sub = verbs.add_parser(name, help=func.__doc__, description=func.__doc__)
        sub.set_defaults(func=func)
        return sub

    verb("test", cmd_test)
    verb("demo", cmd_demo)
    bench = verb("bench", cmd_bench)
    bench.add_argument("--quick", action="store_true", help="tiny shapes; writes nothing")
    bench.add_argument("--pipeline", action="store_true", help="install time, wheel sizes, compile counts")
    bench.add_argument("--abi", action="store_true", help="the stable-ABI build vs the ATen build, side by side")
    local = verb("local", cmd_local)
    local.add_argument("--out", help="default: wheelhouse/ (wheelhouse/<arch>/ with --arch)")
    local.add_argument("--torch", nargs="*", help="torch minors (default: ci/matrix.toml [local])")
    local.add_argument("--arch", choices=["native", "aarch64", "macos-arm64"], default="native",
                       help="aarch64: the Linux arm64 wheel under qemu emulation (root, binfmt_misc); "
                            "macos-arm64: the macOS wheel cross-built, repaired and audited here (not run)")
    local.add_argument("--matrix", action="store_true",
                       help="every declared torch in one wheel, smoke-tested on the CPython x torch cells of "
                            "ci/matrix.toml [local] (torch builds not on disk come from the registry: GBs)")
    local.add_argument("--cibuildwheel", action="store_true",
                       help="the real cibuildwheel Linux build in a local container (root; stand-in image)")
    rpt = verb("report", cmd_report)
    rpt.add_argument("dir", nargs="?", default=str(ROOT / "wheelhouse"))
    rpt.add_argument("--doc", help="also write the documentation page, e.g. docs/verification.md")
    rep_ = verb("replay", cmd_replay)
    rep_.add_argument("workflow", nargs="?", default="release.yml", help="a file in .github/workflows")
    rep_.add_argument("--out", default=str(ROOT / "wheelhouse" / "replay"))
    mat = verb("matrix", cmd_matrix)
    mat.add_argument("--scope", choices=["pr", "release"], default="pr")
    mat.add_argument("--kind", choices=["build", "verify", "merge", "table"], default="build")
    mat.add_argument("--github-output", action="store_true", help="write build/merge/verify to $GITHUB_OUTPUT")
    verb("install-torch", cmd_install_torch)
    verb("install-cuda", cmd_install_cuda).add_argument("dir")
    gpu = verb("gpu-check", cmd_gpu_check)
    gpu.add_argument("--wheel", help="the wheel to check (default: the linux wheel in wheelhouse/)")
    gpu.add_argument("--out", default="wheelhouse/gpu-check", help="where gpu-check.md and GPU.md go")
    gpu.add_argument("--quick", action="store_true", help="the benchmark's tiny shapes only")
    gpu.add_argument("--install", action="store_true", help="first install torch==$TORCH_SEGMENT_OPS_TORCH_PIN and "
                     "the test requirements here (a fresh GPU runner)")
    verb("gpu-runner", cmd_gpu_runner)
    verb("cibuildwheel", cmd_cibuildwheel)
    sd = verb("sdist", cmd_sdist)
    sd.add_argument("--out", default="dist")
    sd.add_argument("--no-isolation", action="store_true")
    verb("verify", cmd_verify).add_argument("wheel_dir")
    tag = verb("check-tag", cmd_check_tag)
    tag.add_argument("tag")
    tag.add_argument("--on-branch", help="also require the checked-out commit to be on this ref (origin/main)")
    guard = verb("release-guard", cmd_release_guard)
    guard.add_argument("--index-url", help="the simple index to publish to (default: the one pip uses here)")
    col = verb("collect", cmd_collect)
    col.add_argument("artifacts")
    col.add_argument("out")
    col.add_argument("--sums", action="store_true")
    verb("lint", cmd_lint)
    verb("lock", cmd_lock)
    dl = verb("download", cmd_download)
    dl.add_argument("--platform", default="native",
                    help="linux-x86_64, linux-aarch64, macos-arm64, a platform tag, or native (this machine)")
    dl.add_argument("--python", help="CPython version, e.g. 3.12 (default: this interpreter's)")
    dl.add_argument("--torch", help="torch version the wheel must support (default: the installed one)")
    dl.add_argument("--version", help="the torch-segment-ops version(s) to choose from: 0.1.0 (exactly) or a specifier "
                    "such as '>=0.1,<0.3' (default: any; with --release vX.Y.Z: X.Y.Z)")
    dl.add_argument("--pre", action="store_true", help="allow pre-releases (as pip's --pre)")
    where = dl.add_mutually_exclusive_group(required=True)
    where.add_argument("--release", metavar="TAG", help="a GitHub release tag (with --repo)")
    where.add_argument("--run", metavar="RUN_ID", help="a GitHub Actions run id (with --repo; needs a token)")
    where.add_argument("--index", metavar="URL", help="a simple (PEP 503/691) index URL")
    dl.add_argument("--repo", help="OWNER/NAME on GitHub")
    dl.add_argument("-o", "--out", default=".", help="where to save the wheel")
    idx = verb("index", cmd_index)
    idx.add_argument("dist")
    idx.add_argument("out")
    bld = verb("build", cmd_build)
    bld.add_argument("--torch", required=True, help="torch minor, e.g. 2.13")
    bld.add_argument("--python", help="CPython to build with (default: ci/matrix.toml [local])")
    bld.add_argument("--out", default="dist")
    bld.add_argument("--project", default=str(ROOT), help="the extension's source tree (default: this one)")
    rep = verb("repair", cmd_repair)
    rep.add_argument("wheel")
    rep.add_argument("-w", required=True, help="destination folder")
    rep.add_argument("--plat", help="auditwheel --plat (default: the best it finds)")
    aud = verb("audit", cmd_audit)
    aud.add_argument("wheels", nargs="+")
    aud.add_argument("--platform", help="the exact platform tag expected")
    mrg = verb("merge", cmd_merge)
    mrg.add_argument("wheels", nargs="+")
    mrg.add_argument("-w", required=True, help="destination folder")
    smk = verb("smoke", cmd_smoke)
    smk.add_argument("wheel")
    smk.add_argument("--python", help="CPython of the env (default: ci/matrix.toml [local] python)")
    smk.add_argument("--torch", required=True, help="exact torch version, e.g. 2.13.0")
    smk.add_argument("--check", help="the project's smoke script (default: ci/smoke_check.py)")
    smk.add_argument("--op-tests", action="store_true", help="also run tests/ops against the installed wheel")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args, rest = parser().parse_known_args(argv)
    if rest and args.verb not in ("test", "cibuildwheel"):
        parser().error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    try:
        if args.verb in NEEDS_DEV_ENV and os.environ.get("TORCH_SEGMENT_OPS_USE_CURRENT_ENV") != "1":
            dev = envs.dev_env()
            environ = dict(dev_environ(dev), TORCH_SEGMENT_OPS_USE_CURRENT_ENV="1")
            return subprocess.run([str(dev.python), "-m", "ci", *argv], cwd=ROOT, env=environ).returncode
        return args.func(args)
    except PipelineError as error:  # the one place a pipeline error becomes a message and an exit code
        if args.debug:
            traceback.print_exception(error)
        print(error, file=sys.stderr)
        return error.return_code
