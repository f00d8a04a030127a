import json
import re
from pathlib import Path

from ci import matrix

README = Path(__file__).resolve().parents[2] / "README.md"


def test_scopes():
    minors = [t.minor for t in matrix.torches()]
    assert minors == sorted(minors, key=matrix.version_key)
    assert [t.minor for t in matrix.scope_torches("pr")] == minors[-1:]
    assert [t.minor for t in matrix.scope_torches("release")] == minors


def test_build_cells_are_platform_times_torch():
    for scope in ("pr", "release"):
        cells = matrix.build_cells(scope)
        expected = {(p.name, t.minor) for p in matrix.platforms() for t in matrix.scope_torches(scope)}
        assert {(c["platform"], c["torch"]) for c in cells} == expected
        assert len(cells) == len(expected)


def test_verify_cells_cover_every_supported_python():
    cells = matrix.verify_cells("release")
    for t in matrix.torches():
        pythons = {c["python"] for c in cells if c["torch"] == t.minor}
        assert pythons == set(t.python)
    assert len(cells) == len(matrix.platforms()) * sum(len(t.python) for t in matrix.torches())


def test_torch_2_15_starts_at_cp311_and_selectors_follow_python_ranges():
    t215 = matrix.torch("2.15")
    assert t215.python[0] == "3.11" and t215.python[-1] == "3.15"
    assert matrix.cibw_build_selector(t215).split()[0] == "cp311-*"
    assert matrix.cibw_build_selector(matrix.torch("2.13")).split() == [f"cp3{m}-*" for m in range(10, 15)]


def test_artifact_names():
    pattern = re.compile(r"^wheels-(manylinux_2_28_(x86_64|aarch64)|macosx_14_0_arm64)(-torch2\.\d+)?$")
    names = [c["artifact"] for c in matrix.build_cells("release") + matrix.verify_cells("release")]
    assert names and all(pattern.match(n) for n in names)
    merge = json.loads(matrix.github_matrix("release", "merge"))["include"]
    assert {c["artifact"] for c in merge} == {c["artifact"] for c in matrix.verify_cells("release")}
    for cell in merge:
        assert cell["inputs"] == [matrix.artifact_name(matrix.platform(cell["platform"]), t) for t in matrix.torches()]


def test_requires_torch_range():
    assert matrix.requires_torch(["2.14", "2.13"]) == "torch>=2.13,<2.15"
    assert matrix.requires_torch(["2.12", "2.13", "2.14", "2.15"]) == "torch>=2.12,<2.16"


def test_local_torches_are_declared_and_the_dev_env_uses_them():
    import inspect

    from ci import envs

    local = matrix.load()["local"]
    assert all(matrix.torch(m) for m in local["torch"] + local["aarch64_torch"])
    defaults = inspect.signature(envs.dev_env).parameters
    assert defaults["python_version"].default == local["python"]
    assert defaults["torch_version"].default == matrix.torch(local["torch"][0]).pin


def test_requirement_includes_are_part_of_the_env_spec():
    from ci import envs

    text = envs.requirements_text(envs.ROOT / "ci" / "requirements-dev.txt")
    assert "-r " not in text and "ninja==" in text and "uv==" in text and "ruff==" in text


def test_readme_support_table_is_generated_from_the_declaration():
    assert matrix.support_table() in README.read_text()
