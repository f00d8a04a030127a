"""The audit (and merge) against crafted wheels: dependencies by path or through a search path outside
the wheel, RECORD rows that do not match the archive, a WHEEL file that lies, scripts that shadow
commands, names that collide on case-insensitive file systems, build folders the loader skips, and
wheels made to crash or exhaust the audit."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ci.errors import PipelineError
from ci.stages import audit, merge
from ci.stages.wheels import WheelInfo
from tests.ci.test_audit import STABLE_TAG
from tests.ci.test_download_hostile import peak_rss_mib_of, zip_of
from tests.ci.wheel_factory import make_wheel

ROOT = Path(__file__).resolve().parents[2]
RECORD = "torch_segment_ops-0.1.0.dist-info/RECORD"
STABLE_RECORD = json.dumps({"abi": "stable", "floor": "2.10", "torch": "2.13.0"}).encode()


def library(folder: Path, *link_args: str, source="int f() { return 0; }", name="_C.so") -> bytes:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "lib.cpp").write_text(source)
    subprocess.run(["g++", "-shared", "-fPIC", "-g0", "-s", "-o", str(folder / name), str(folder / "lib.cpp"),
                    "-Wl,--no-as-needed", *link_args], check=True, cwd=folder)  # keep unused dependencies
    return (folder / name).read_bytes()


def stable_wheel(folder: Path, c_library: bytes, extra: dict | None = None, **kwargs) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return make_wheel(folder, version="0.1.0", requires="torch>=2.10", tag=STABLE_TAG, builds={}, extra={
        "torch_segment_ops/_builds/stable/build.json": STABLE_RECORD,
        "torch_segment_ops/_builds/stable/_C.so": c_library, **(extra or {})}, **kwargs)


def rewritten(path: Path, members: dict[str, bytes]) -> Path:
    """The same archive with some members' bytes replaced or added as they are (RECORD not recomputed)."""
    with zipfile.ZipFile(path) as zf:
        files = {i.filename: zf.read(i) for i in zf.infolist()}
    files.update(members)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def libraries_problems(path: Path) -> list[str]:
    return audit.check_libraries(WheelInfo.read(path))


def test_a_dependency_by_path_named_like_torch_is_refused(tmp_path):
    outside = tmp_path / "some" / "dir"
    library(outside, name="libtorch_x.so")  # no SONAME: DT_NEEDED records the path it was linked by
    wheel = stable_wheel(tmp_path / "w", library(tmp_path / "b", str(outside / "libtorch_x.so")))
    assert libraries_problems(wheel) == [
        f"torch_segment_ops/_builds/stable/_C.so needs {outside}/libtorch_x.so by path: a dependency must be a bare "
        "soname found in the policy, torch's folder or the wheel"]


def test_a_bare_name_torch_does_not_ship_is_refused(tmp_path):
    library(tmp_path / "l", "-Wl,-soname,libtorch_x.so", name="libtorch_x.so")
    wheel = stable_wheel(tmp_path / "w", library(tmp_path / "b", f"-L{tmp_path / 'l'}", "-ltorch_x"))
    assert libraries_problems(wheel) == [
        "torch_segment_ops/_builds/stable/_C.so needs libtorch_x.so: neither in the manylinux_2_28_x86_64 policy, "
        "torch's folder nor the wheel"]


@pytest.mark.parametrize("rpath, kind", [("/tmp", "RUNPATH"), ("$ORIGIN/../../../..", "RUNPATH"),
                                         ("/opt/x", "RPATH"), ("$ORIGIN/../../..:/usr/lib/evil", "RUNPATH")])
def test_a_search_path_outside_the_wheel_is_refused(tmp_path, rpath, kind):
    dtags = ["-Wl,--disable-new-dtags"] if kind == "RPATH" else ["-Wl,--enable-new-dtags"]
    wheel = stable_wheel(tmp_path / "w", library(tmp_path / "b", f"-Wl,-rpath,{rpath}", *dtags))
    problems = libraries_problems(wheel)
    assert problems and all(f"has {kind} " in p and "only $ORIGIN-relative folders inside the wheel" in p
                            for p in problems), problems


def test_a_graft_found_through_an_origin_search_path_passes(tmp_path):
    """What auditwheel makes when it grafts a library: $ORIGIN/../../torch_segment_ops.libs."""
    library(tmp_path / "l", "-Wl,-soname,libfoo-1a2b3c4d.so", name="libfoo-1a2b3c4d.so")
    c_library = library(tmp_path / "b", f"-L{tmp_path / 'l'}", "-l:libfoo-1a2b3c4d.so",
                        "-Wl,-rpath,$ORIGIN/../../../torch_segment_ops.libs")
    wheel = stable_wheel(tmp_path / "w", c_library, extra={
        "torch_segment_ops.libs/libfoo-1a2b3c4d.so": (tmp_path / "l" / "libfoo-1a2b3c4d.so").read_bytes()})
    assert libraries_problems(wheel) == []
    elsewhere = stable_wheel(tmp_path / "w2", c_library, extra={
        "torch_segment_ops/libfoo-1a2b3c4d.so": (tmp_path / "l" / "libfoo-1a2b3c4d.so").read_bytes()})
    assert "needs libfoo-1a2b3c4d.so: neither" in libraries_problems(elsewhere)[0]


def test_torch_libraries_are_the_exact_names_in_torchs_own_folder():
    """Every name the audit accepts as torch's is a file in the lib folder of an installed torch (this
    env's, and the CUDA torch's where its env exists), or its macOS / OpenMP twin."""
    import torch

    lib = Path(torch.__file__).parent / "lib"
    shipped = {p.name for p in lib.iterdir()}
    assert {"libc10.so", "libtorch_cpu.so", "libtorch.so"} <= shipped & audit.TORCH_PROVIDES
    linux = {n for n in audit.TORCH_PROVIDES if n.endswith((".so", ".so.1"))}
    cuda_only = {"libc10_cuda.so", "libtorch_cuda.so"}
    assert linux - cuda_only <= shipped | {"libgomp.so.1"}, linux - shipped
    assert not audit.torch_provides("/opt/torch/lib/libc10.so") and not audit.torch_provides("libtorch_x.so")


def record_rows(path: Path) -> str:
    with zipfile.ZipFile(path) as zf:
        return zf.read(RECORD).decode()


@pytest.mark.parametrize("change, message", [
    (lambda rows: rows + "../../distutils-precedence.pth,sha256=AAAA,10\n",
     "RECORD lists '../../distutils-precedence.pth', which the wheel does not hold"),
    (lambda rows: rows.replace("torch_segment_ops/__init__.py,sha256=", "torch_segment_ops/__init__.py,shake_128="),
     "RECORD gives torch_segment_ops/__init__.py a shake_128 hash; sha256 expected"),
    (lambda rows: rows + "x," + "y" * 200_000 + ",1\n", "RECORD is not a readable CSV file"),
    (lambda rows: "\n".join(r for r in rows.splitlines() if "__init__" not in r) + "\n",
     "torch_segment_ops/__init__.py is not in RECORD"),
    (lambda rows: rows + rows.splitlines()[0] + "\n", "twice"),
])
def test_record_must_match_the_archive_both_ways(tmp_path, change, message):
    wheel = make_wheel(tmp_path, version="0.1.0", requires="torch>=2.10", tag=STABLE_TAG, builds={})
    rewritten(wheel, {RECORD: change(record_rows(wheel)).encode()})
    problems = audit.audit(wheel)
    assert len(problems) == 1 and problems[0].startswith("not an intact wheel (") and message in problems[0]
    with pytest.raises(PipelineError, match="is not an intact wheel"):
        merge.read(wheel)


WHEEL = "torch_segment_ops-0.1.0.dist-info/WHEEL"


@pytest.mark.parametrize("text, message", [
    ("Wheel-Version: 2.0\nRoot-Is-Purelib: false\nTag: {tag}\n", "Wheel-Version '2.0'"),
    ("Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: {tag}\n", "Root-Is-Purelib 'true'"),
    ("Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: py3-none-any\n", "Tag ['py3-none-any'] != the file name's"),
    ("Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: {tag}\nTag: py3-none-any\n", "!= the file name's"),
])
def test_the_wheel_file_must_agree_with_the_name(tmp_path, text, message):
    wheel = make_wheel(tmp_path, version="0.1.0", requires="torch>=2.10", tag=STABLE_TAG, builds={},
                       extra={WHEEL: text.format(tag=STABLE_TAG).encode()})
    problems = audit.check_wheel_file(WheelInfo.read(wheel))
    assert len(problems) == 1 and message in problems[0], problems


def test_an_honest_wheel_file_passes(tmp_path):
    wheel = make_wheel(tmp_path, version="0.1.0", requires="torch>=2.10", tag=STABLE_TAG, builds={})
    assert audit.check_wheel_file(WheelInfo.read(wheel)) == []


@pytest.mark.parametrize("scripts, problem", [
    ("[console_scripts]\npython3 = torch_segment_ops:main\n", "console_scripts command 'python3'"),
    ("[gui_scripts]\npip = torch_segment_ops:main\n", "gui_scripts command 'pip'"),
    ("[console_scripts]\ntorch-segment-ops-info = torch_segment_ops:main\n", None),
    ("[torch.plugins]\npython3 = torch_segment_ops:main\n", None),
])
def test_scripts_must_carry_the_project_name(tmp_path, scripts, problem):
    wheel = make_wheel(tmp_path, version="0.1.0", requires="torch>=2.10", tag=STABLE_TAG, builds={},
                       extra={"torch_segment_ops-0.1.0.dist-info/entry_points.txt": scripts.encode()})
    problems = audit.check_entry_points(WheelInfo.read(wheel))
    assert (problems == []) if problem is None else (len(problems) == 1 and problem in problems[0]), problems


def test_files_differing_only_by_case_are_refused(tmp_path):
    wheel = make_wheel(tmp_path, extra={"torch_segment_ops/Ops.py": b"a", "torch_segment_ops/ops.py": b"b"})
    assert "'torch_segment_ops/ops.py' and 'torch_segment_ops/Ops.py' differ only by case (one file on macOS and " \
           "Windows)" in audit.check_contents(WheelInfo.read(wheel))


@pytest.mark.parametrize("folder", ["__pycache__", ".x", "_stable"])
def test_a_build_folder_the_loader_skips_is_refused(tmp_path, folder):
    wheel = stable_wheel(tmp_path, b"\x7fELF", extra={f"torch_segment_ops/_builds/{folder}/build.json": STABLE_RECORD,
                                                    f"torch_segment_ops/_builds/{folder}/_C.so": b"x"})
    problems = audit.check_contents(WheelInfo.read(wheel))
    assert f"unexpected file torch_segment_ops/_builds/{folder}/build.json (not one of ours)" in problems


def test_a_build_folder_without_its_library_or_with_two_is_refused(tmp_path):
    wheel = stable_wheel(tmp_path, b"x", extra={"torch_segment_ops/_builds/stable/_C.abi3.so": b"y",
                                               "torch_segment_ops/_builds/cu13/build.json": STABLE_RECORD})
    problems = audit.check_contents(WheelInfo.read(wheel))
    assert "build folder cu13 holds ['build.json']: the loader needs build.json and one _C library" in problems
    assert "build folder stable holds ['_C.abi3.so', '_C.so', 'build.json']: the loader needs build.json and " \
           "one _C library" in problems


def test_a_crafted_wheel_is_reported_and_the_next_one_still_audited(tmp_path):
    """A RECORD with another hash algorithm, a field over csv's limit, a record nested past Python's
    recursion limit: each one reported on its own lines, then the good wheel audited."""
    bad = []
    for i, change in enumerate([lambda r: r.replace(",sha256=", ",shake_128="),
                                lambda r: r + "x," + "y" * 200_000 + ",1\n"]):
        (tmp_path / str(i)).mkdir()
        wheel = make_wheel(tmp_path / str(i), version="0.1.0", requires="torch>=2.10", tag=STABLE_TAG, builds={})
        bad.append(rewritten(wheel, {RECORD: change(record_rows(wheel)).encode()}))
    (tmp_path / "deep").mkdir()
    bad.append(stable_wheel(tmp_path / "deep", b"x", extra={
        "torch_segment_ops/_builds/stable/build.json": b"[" * 100_000 + b"]" * 100_000}))
    (tmp_path / "good").mkdir()
    good = make_wheel(tmp_path / "good")
    proc = subprocess.run([sys.executable, "-m", "ci", "audit", *map(str, bad), str(good)], capture_output=True,
                          text=True, cwd=ROOT, env={"PATH": "/usr/bin:/bin", "TORCH_SEGMENT_OPS_USE_CURRENT_ENV": "1"})
    assert "Traceback" not in proc.stderr and proc.returncode == 4, proc.stderr
    assert proc.stdout.count("FAIL ") == 4 and f"FAIL {good.name}" in proc.stdout
    assert "shake_128 hash; sha256 expected" in proc.stdout and "RECORD is not a readable CSV file" in proc.stdout
    assert "could not read the wheel (RecursionError" in proc.stdout


def test_a_small_wheel_that_unpacks_to_a_gigabyte_is_refused_with_bounded_memory(tmp_path):
    bomb = zip_of({"torch_segment_ops/blob.py": 1 << 30, RECORD: 0},
                  tmp_path / f"torch_segment_ops-0.1.0-{STABLE_TAG}.whl")
    assert bomb.stat().st_size < 2 << 20
    proc, peak = peak_rss_mib_of(f"from pathlib import Path\nfrom ci.stages import audit\n"
                                 f"print(audit.audit(Path({str(bomb)!r})))")
    assert f"it unpacks to {1 << 30} bytes, more than the 268435456 any wheel of ours may" in proc.stdout, proc.stderr
    assert peak < 300, f"peak RSS {peak:.0f} MiB"


def test_merge_names_its_output_the_same_under_any_hash_seed(tmp_path):
    """A wheel with two platform tags: the output name comes from the file name, not a set's order."""
    tag = "cp310-abi3-manylinux_2_28_x86_64.manylinux_2_34_x86_64"
    wheels = []
    for torch_version in ("2.13.0", "2.14.0"):
        folder = tmp_path / torch_version
        folder.mkdir()
        label = "pt" + torch_version.replace(".", "")[:3]
        wheels.append(make_wheel(folder, version=f"0.1.0+{label}", torch=torch_version,
                                 requires=f"torch=={torch_version[:4]}.*", tag=tag))
    names = set()
    for seed in ("0", "1", "2", "3"):
        out = tmp_path / f"out{seed}"
        code = (f"from pathlib import Path\nfrom ci.stages import merge\n"
                f"print(merge.merge([Path(w) for w in {[str(w) for w in wheels]!r}], Path({str(out)!r})).name)")
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                              env={"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": seed})
        assert proc.returncode == 0, proc.stderr
        names.add(proc.stdout.strip())
    assert names == {f"torch_segment_ops-0.1.0-{tag}.whl"}


def test_record_rows_for_folder_entries_are_fine(tmp_path):
    """wheel's WheelFile lists a folder entry it was given in RECORD: that row names what the archive holds."""
    from wheel.wheelfile import WheelFile

    path = tmp_path / f"torch_segment_ops-0.1.0-{STABLE_TAG}.whl"
    with WheelFile(path, "w") as wf:
        wf.writestr("torch_segment_ops/", b"")
        wf.writestr("torch_segment_ops/__init__.py", b"")
        wf.writestr("torch_segment_ops-0.1.0.dist-info/METADATA", b"Name: torch-segment-ops\nVersion: 0.1.0\n")
    assert "torch_segment_ops/," in record_rows(path)
    assert set(WheelInfo.read(path).files) == {"torch_segment_ops/__init__.py", RECORD,
                                               "torch_segment_ops-0.1.0.dist-info/METADATA"}
