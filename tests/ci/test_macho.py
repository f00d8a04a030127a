"""The Mach-O gates' rules, on synthetic load-command summaries (fast); the real
libraries are checked by test_macos_e2e.py."""

import pytest

from ci.stages import audit, macho

GOOD = {"cpu": "ARM64", "minos": "14.0", "signature": None,
        "dylibs": ["/usr/lib/libSystem.B.dylib", "/usr/lib/libc++.1.dylib", "@rpath/libc10.dylib"],
        "undefined": [("_malloc", 1), ("__Znwm", 2), ("__ZN3c105ErrorC1E", 3), ("_PyModule_Create2", 0)]}


def problems(monkeypatch, **changes):
    monkeypatch.setattr(macho, "read", lambda data: {**GOOD, **changes})
    monkeypatch.setattr(macho, "signature_problems", lambda *args: [])
    return macho.problems("lib.so", b"", "14.0", audit.torch_provides)


def test_a_good_library_passes(monkeypatch):
    assert problems(monkeypatch) == []


@pytest.mark.parametrize("changes, expected", [
    ({"cpu": "x86_64"}, "CPU type x86_64, expected arm64"),
    ({"minos": "15.0"}, "minimum macOS 15.0, expected the deployment target 14.0"),
    ({"dylibs": [*GOOD["dylibs"], "/opt/homebrew/lib/libomp.dylib"]}, "links /opt/homebrew/lib/libomp.dylib"),
    ({"dylibs": [*GOOD["dylibs"], "@rpath/libfoo.dylib"]}, "links @rpath/libfoo.dylib"),
    ({"dylibs": [*GOOD["dylibs"], "@rpath/libtorch_x.dylib"]}, "links @rpath/libtorch_x.dylib"),  # not torch's
    ({"undefined": [("__ZNSt3__14cout", 0xFE)]}, "symbol __ZNSt3__14cout is bound to no library"),
    ({"undefined": [("_strlen", 9)]}, "symbol _strlen is bound to no library"),
])
def test_each_rule(monkeypatch, changes, expected):
    found = problems(monkeypatch, **changes)
    assert len(found) == 1 and expected in found[0], found


def test_garbage_is_a_problem_not_a_crash():
    assert "not a readable thin Mach-O file" in macho.problems("x.so", macho.MAGIC_64 + b"\0" * 8, "14.0", bool)[0]
    assert macho.signature_problems("x.so", b"\0" * 64, None) == [
        "x.so: no code signature (arm64 macOS loads only signed code)"]
    assert "bad magic" in macho.signature_problems("x.so", b"\0" * 64, (0, 64))[0]
    assert "truncated" in macho.signature_problems("x.so", b"\xfa\xde\x0c\xc0\0\0\0\0\0\0\0\x05", (0, 12))[0]


def test_deployment_target_from_the_tag():
    assert macho.deployment_target("macosx_14_0_arm64") == "14.0"
    assert macho.deployment_target("macosx_11_2_universal2") == "11.2"
    with pytest.raises(ValueError):
        macho.deployment_target("manylinux_2_28_x86_64")
