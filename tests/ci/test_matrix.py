import copy
import json
import re
from pathlib import Path

import pytest

from ci.declaration import matrix
from ci.errors import PipelineError

README = Path(__file__).resolve().parents[2] / "README.md"


def test_scopes():
    minors = [t.minor for t in matrix.torches()]
    assert minors == sorted(minors, key=matrix.version_key)
    assert [t.minor for t in matrix.scope_torches("pr")] == minors[-1:]
    assert [t.minor for t in matrix.scope_torches("release")] == minors


@pytest.fixture
def per_torch(monkeypatch):
    """The declaration switched to per-torch mode (what an extension on the full ATen API declares)."""
    data = copy.deepcopy(matrix.load())
    data["package"]["abi"] = "per-torch"
    monkeypatch.setattr(matrix, "load", lambda path=None: data)
    return data


def test_stable_mode_builds_once_per_platform_and_verifies_every_torch_from_the_floor():
    assert matrix.abi() == "stable"  # what torch-segment-ops ships
    floor = matrix.torch_floor()
    assert matrix.torches()[0].minor == floor
    for scope in ("pr", "release"):
        cells = matrix.build_cells(scope)
        assert [(c["platform"], c["torch"]) for c in cells] == [(p.name, matrix.build_torch().minor)
                                                                for p in matrix.platforms()]
        assert [c["artifact"] for c in cells] == [matrix.artifact_name(p) for p in matrix.platforms()]  # final
        assert matrix.platform_cells(scope) == []  # no merge stage
    verified = {(c["platform"], c["python"], c["torch"]) for c in matrix.verify_cells("release")}
    assert {t for _, _, t in verified} == {t.minor for t in matrix.torches()}
    assert matrix.wheel_tag_prefix() == "py3-none"


def test_per_torch_mode_builds_platform_times_torch_and_merges(per_torch):
    for scope in ("pr", "release"):
        cells = matrix.build_cells(scope)
        expected = {(p.name, t.minor) for p in matrix.platforms() for t in matrix.scope_torches(scope)}
        assert {(c["platform"], c["torch"]) for c in cells} == expected
        assert len(cells) == len(expected)
    merge = matrix.platform_cells("release")
    assert {c["artifact"] for c in merge} == {c["artifact"] for c in matrix.verify_cells("release")}
    for cell in merge:
        assert cell["inputs"] == [matrix.artifact_name(matrix.platform(cell["platform"]), t) for t in matrix.torches()]
    assert matrix.wheel_tag_prefix() == "cp310-abi3"


def changed(*path, value=None, delete=False):
    """The declaration's data with one value set (or deleted) at path."""
    data = copy.deepcopy(matrix.load())
    table = data
    for key in path[:-1]:
        table = table[key]
    if delete:
        del table[path[-1]]
    else:
        table[path[-1]] = value
    return data


@pytest.mark.parametrize("path, value, message", [
    (("package", "abi"), "both", "package.abi: must be 'stable' or 'per-torch', got 'both'"),
    (("package", "build_torch"), "2.9", "package.build_torch: '2.9' must be a declared torch >= torch_floor"),
    (("package", "abi_mode"), "stable", "package.abi_mode: unknown key"),
    (("package", "max_wheel_kib"), "1 MiB", "package.max_wheel_kib: expected an integer, got '1 MiB'"),
    (("platforms", "linux-x86_64", "archs"), "x86_64", "platforms.linux-x86_64.archs: unknown key"),
    (("platforms", "linux-x86_64", "cuda"), ["14"], 'platforms.linux-x86_64.cuda: CUDA 14 has no \\[cuda."14"\\]'),
    (("torch", "2.13", "python"), "3.10", 'torch."2.13".python: expected \\[oldest, newest\\] CPython'),
    (("cuda", "13", "archs"), "7.5", 'cuda."13".archs: expected a list of strings'),
    (("scopes", "pr"), "latest", "scopes.pr: must be one of 'newest', 'all', 'next', got 'latest'"),
    (("local", "aarch64_torch"), ["2.99"], "local.aarch64_torch: torch 2.99 is not declared"),
    (("matrix",), {}, "matrix: unknown table"),
    (("release", "gpu_runner"), True, "release.gpu_runner: expected a string, got True"),
    (("release", "gpu_runners"), ["a"], "release.gpu_runners: unknown key"),
])
def test_bad_declarations_are_errors_naming_the_key(path, value, message):
    with pytest.raises(PipelineError, match="ci/declaration/matrix.toml: " + message):
        matrix.parse(changed(*path, value=value))


@pytest.mark.parametrize("path", [("package", "torch_floor"), ("platforms", "macos-arm64", "runner"), ("local",)])
def test_missing_keys_are_errors_naming_the_key(path):
    with pytest.raises(PipelineError, match="ci/declaration/matrix.toml: " + ".".join(path) + ": missing"):
        matrix.parse(changed(*path, delete=True))


def test_an_unknown_scope_is_an_error_not_all():
    with pytest.raises(PipelineError, match="unknown scope 'nightly'"):
        matrix.scope_torches("nightly")


def test_verify_cells_cover_every_supported_python():
    cells = [c for c in matrix.verify_cells("release") if not c["python"].endswith("t")]
    for t in matrix.torches():
        pythons = {c["python"] for c in cells if c["torch"] == t.minor}
        assert pythons == set(t.python)
    assert len(cells) == len(matrix.platforms()) * sum(len(t.python) for t in matrix.torches())


def test_free_threaded_cells_take_the_oldest_and_newest_torch_publishing_each():
    for scope in ("pr", "release"):
        in_scope = matrix.scope_torches(scope)
        cells = [c for c in matrix.verify_cells(scope) if c["python"].endswith("t")]
        expected = set()
        for version in {v for t in in_scope for v in t.free_threaded}:
            having = [t for t in in_scope if version in t.free_threaded]
            expected |= {(p.name, f"{version}t", having[0].minor) for p in matrix.platforms()}
            expected |= {(p.name, f"{version}t", having[-1].minor) for p in matrix.platforms()}
        assert {(c["platform"], c["python"], c["torch"]) for c in cells} == expected
        assert len(cells) == len(expected)
    release = {(c["python"], c["torch"]): c["torch_pin"] for c in matrix.verify_cells("release")}
    assert release[("3.13t", "2.10")] == "2.10.0" and release[("3.14t", "2.15")] == "2.15.0"
    assert release[("3.13t", "2.12")] == "2.12.0"  # torch 2.12.1 publishes no cp313t wheels: the declared release
    assert {py for py, _ in release if py.endswith("t")} == {"3.13t", "3.14t", "3.15t"}


def test_newest_cells_are_each_cpython_with_its_oldest_and_newest_torch():
    cells = [(py, t.minor, pin) for py, t, pin in matrix.newest_cells()]
    assert cells == [("3.14", "2.10", "2.10.0"), ("3.14", "2.15", "2.15.0"), ("3.15", "2.15", "2.15.0"),
                     ("3.13t", "2.10", "2.10.0"), ("3.13t", "2.12", "2.12.0")]


@pytest.mark.parametrize("path, value, message", [
    (("torch", "2.13", "free_threaded"), ["3.9"], 'torch."2.13".free_threaded: CPython 3.9 is not in its python'),
    (("torch", "2.13", "free_threaded"), "3.14", 'torch."2.13".free_threaded: expected a list of strings'),
    (("torch", "2.13", "free_threaded_pin"), {"3.13": "2.13.0"}, 'torch."2.13".free_threaded_pin: CPython 3.13 is '
                                                                 'not in free_threaded'),
    (("torch", "2.13", "free_threaded_pin"), ["2.13.0"], 'torch."2.13".free_threaded_pin: expected a table'),
])
def test_bad_free_threaded_declarations_name_the_key(path, value, message):
    with pytest.raises(PipelineError, match="ci/declaration/matrix.toml: " + message):
        matrix.parse(changed(*path, value=value))


def test_selectors_follow_each_declared_python_range():
    data = changed("torch", "2.13", "python", value=["3.11", "3.13"])
    data["torch"]["2.13"]["free_threaded"] = []  # 3.14t needs 3.14 in the range
    narrowed = matrix.parse(data)
    assert [t.python for t in narrowed.torches if t.minor == "2.13"] == [("3.11", "3.12", "3.13")]  # inclusive
    for t in matrix.torches():
        low, high = matrix.load()["torch"][t.minor]["python"]
        assert matrix.cibw_build_selector(t).split() == [f"cp{v.replace('.', '')}-*" for v in
                                                        matrix.python_range(low, high)]


def test_artifact_names(per_torch):
    pattern = re.compile(r"^wheels-(manylinux_2_28_(x86_64|aarch64)|macosx_14_0_arm64)(-torch2\.\d+)?$")
    names = [c["artifact"] for c in matrix.build_cells("release") + matrix.verify_cells("release")]
    assert names and all(pattern.match(n) for n in names)
    assert json.loads(matrix.github_matrix("release", "merge"))["include"] == matrix.platform_cells("release")


def test_requires_torch_range():
    assert matrix.requires_torch(["2.14", "2.13"]) == "torch>=2.13,<2.15"
    assert matrix.requires_torch(["2.12", "2.13", "2.14", "2.15"]) == "torch>=2.12,<2.16"


def test_local_torches_are_declared_and_the_dev_env_uses_them(monkeypatch):
    from ci.util import envs

    local = matrix.declaration().local
    assert all(matrix.torch(m) for m in local.torch + local.aarch64_torch)
    calls = []
    monkeypatch.setattr(envs, "base_env", lambda *args: calls.append(args) or "base")
    monkeypatch.setattr(envs, "overlay_env", lambda base, name, reqs: (base, name))
    assert envs.dev_env() == ("base", "dev") and calls == [(local.python, matrix.torch(local.torch[0]).pin)]


def test_requirement_includes_are_part_of_the_env_spec():
    from ci.util import envs

    text = envs.requirements_text(envs.REQUIREMENTS / "dev.txt")
    assert "-r " not in text and "ninja==" in text and "uv==" in text and "ruff==" in text


def test_readme_support_table_is_generated_from_the_declaration():
    assert matrix.support_table() in README.read_text()


def test_the_next_scope_is_torchs_next_minor_on_the_oldest_and_newest_cpython(monkeypatch):
    newest = matrix.torches()[-1]
    (upcoming,) = matrix.scope_torches("next")
    major, minor = matrix.version_key(newest.minor)
    assert (upcoming.minor, upcoming.pin) == (f"{major}.{minor + 1}", f"{major}.{minor + 1}.*")
    assert matrix.build_cells("next") == matrix.build_cells("pr")  # stable mode: main's final wheels
    monkeypatch.setenv(matrix.NEXT_INDEX_VARIABLE, "http://127.0.0.1:9/nightly/")
    cells = matrix.verify_cells("next")
    assert {(c["platform"], c["python"]) for c in cells} == {
        (p.name, py) for p in matrix.platforms() for py in (newest.python[0], newest.python[-1])}
    assert {(c["torch_pin"], c["torch_index"], c["op_tests"]) for c in cells} == {
        (upcoming.pin, "http://127.0.0.1:9/nightly/", "1")}


def test_the_next_scope_needs_stable_mode_and_an_index(per_torch, monkeypatch):
    from ci.util import envs

    with pytest.raises(PipelineError, match="only be verified in stable mode"):
        matrix.build_cells("next")
    monkeypatch.setenv("TORCH_SEGMENT_OPS_TORCH_PIN", "2.16.*")
    monkeypatch.delenv("TORCH_SEGMENT_OPS_TORCH_INDEX", raising=False)
    with pytest.raises(PipelineError, match="repository variable TORCH_NEXT_INDEX"):
        envs.install_torch_here()  # before pip runs: it would find no pre-release of torch on PyPI
