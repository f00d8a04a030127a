"""Fuzzed wheels: a valid wheel of ours with random bytes flipped, cut short, or its RECORD, WHEEL,
METADATA, entry points or build records replaced by random text. The audit must report problems as
strings (never raise), and merge, the index and the download verb's METADATA reader must fail with
their one error type."""

import zipfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ci.errors import PipelineError
from ci.publish import download
from ci.stages import audit, merge
from tests.ci.wheel_factory import make_wheel

TAG = "py3-none-manylinux_2_28_x86_64"
DIST_INFO = "torch_segment_ops-0.1.0.dist-info"
MEMBERS = [f"{DIST_INFO}/RECORD", f"{DIST_INFO}/WHEEL", f"{DIST_INFO}/METADATA", f"{DIST_INFO}/entry_points.txt",
           "torch_segment_ops/_builds/stable/build.json", "torch_segment_ops/__init__.py"]


@st.composite
def damaged(draw, base: bytes) -> bytes:
    """The bytes of a wheel, damaged one of three ways."""
    how = draw(st.sampled_from(["flip", "cut", "member"]))
    if how == "flip":
        data = bytearray(base)
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        return bytes(data)
    if how == "cut":
        return base[:draw(st.integers(0, len(base) - 1))]
    return base  # a member replaced: done by the caller (it needs a zip writer)


def replace_member(path, member: str, text: bytes) -> None:
    """A copy of the base wheel with one member's bytes replaced (RECORD kept as it was: usually a mismatch)."""
    with zipfile.ZipFile(path) as zf:
        files = {i.filename: zf.read(i) for i in zf.infolist()}
    files[member] = text
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)


TEXT = st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode),
                 st.sampled_from([b"[" * 5000, b"Wheel-Version: 2.0\n", b"a,b,c\n" * 50, b"\xff\xfe",
                                  b"[console_scripts]\npython3 = x:y\n", b'{"abi": "stable", "floor": [1]}']))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_damaged_wheel_is_reported_never_raised(tmp_path, monkeypatch, data):
    monkeypatch.setattr(audit, "check_external", lambda wheel: [])  # the field's tools: tested elsewhere, slow
    folder = tmp_path / "w"
    folder.mkdir(exist_ok=True)
    base = make_wheel(folder, version="0.1.0", requires="torch>=2.10", tag=TAG, builds={}, extra={
        "torch_segment_ops/_builds/stable/build.json": b'{"abi": "stable", "floor": "2.10", "torch": "2.13.0"}',
        "torch_segment_ops/_builds/stable/_C.so": b"\x7fELF not really"})
    original = base.read_bytes()
    bytes_ = data.draw(damaged(original))
    base.write_bytes(bytes_)
    if bytes_ == original:
        replace_member(base, data.draw(st.sampled_from(MEMBERS)), data.draw(TEXT))
    problems = audit.audit(base)
    assert isinstance(problems, list) and all(isinstance(p, str) for p in problems)
    try:
        merge.read(base)
    except PipelineError:
        pass
    try:
        download.wheel_metadata(base.read_bytes(), base.name)
    except download.DownloadError:
        pass
