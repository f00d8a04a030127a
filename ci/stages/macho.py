"""Gates for the macOS libraries in a wheel, read with macholib (delocate's own
Mach-O reader), so they run on Linux as well as on a Mac runner.

A library passes when it is arm64, its LC_BUILD_VERSION minos equals the
wheel's deployment target, it links only libSystem, libc++ and torch's
@rpath libraries, every undefined symbol is bound to one of those except an
allow-list looked up at load time (the CPython C API, which the interpreter
provides), and its ad-hoc code signature matches its contents (arm64 macOS
refuses to load a library whose signature does not).
"""

from __future__ import annotations

import hashlib
import re
import struct
import tempfile

from macholib import mach_o
from macholib.MachO import MachO
from macholib.SymbolTable import SymbolTable

SYSTEM_LIBRARIES = {"/usr/lib/libSystem.B.dylib", "/usr/lib/libc++.1.dylib"}
RUNTIME_LOOKUP = re.compile(r"_Py\w+")  # provided by the interpreter that imports us
MAGIC_64 = b"\xcf\xfa\xed\xfe"  # MH_MAGIC_64, little endian
CSMAGIC_EMBEDDED_SIGNATURE, CSMAGIC_CODEDIRECTORY, CS_ADHOC, CS_HASHTYPE_SHA256 = 0xFADE0CC0, 0xFADE0C02, 0x2, 2


def is_macho(data: bytes) -> bool:
    return data[:4] == MAGIC_64


def _version(packed: int) -> str:
    return f"{packed >> 16}.{(packed >> 8) & 0xFF}"


def read(data: bytes) -> dict:
    """cpu, dylibs (in load order), minos, signature (offset, size) and undefined symbols
    [(name, library ordinal)] of a thin Mach-O file."""
    with tempfile.NamedTemporaryFile(suffix=".dylib") as tmp:  # macholib reads files by name
        tmp.write(data)
        tmp.flush()
        macho = MachO(tmp.name, allow_unknown_load_commands=True)
        (header,) = macho.headers  # thin, not universal
        info = {"cpu": mach_o.CPU_TYPE_NAMES.get(header.header.cputype, header.header.cputype), "dylibs": [],
                "minos": None, "signature": None}
        for load, command, payload in header.commands:
            if load.cmd in (mach_o.LC_LOAD_DYLIB, mach_o.LC_LOAD_WEAK_DYLIB, mach_o.LC_REEXPORT_DYLIB):
                info["dylibs"].append(payload.rstrip(b"\0").decode())
            elif load.cmd == mach_o.LC_BUILD_VERSION:
                info["minos"] = _version(command.minos)
            elif load.cmd == mach_o.LC_CODE_SIGNATURE:
                info["signature"] = (command.dataoff, command.datasize)
        info["undefined"] = [(symbol.decode(), nlist.n_desc >> 8)
                             for nlist, symbol in SymbolTable(macho, header=header).undefsyms]
    return info


def problems(name: str, data: bytes, deployment_target: str, torch_provides) -> list[str]:
    """Everything wrong with the Mach-O library `name` (its bytes: data) for a wheel targeting macOS
    deployment_target; torch_provides(file name) says which @rpath libraries torch provides."""
    try:
        info = read(data)
    except Exception as error:  # macholib raises plain ValueError/struct.error on garbage
        return [f"{name}: not a readable thin Mach-O file ({error!r})"]
    found = []
    if info["cpu"] != "ARM64":
        found.append(f"{name}: CPU type {info['cpu']}, expected arm64")
    if info["minos"] != deployment_target:
        found.append(f"{name}: minimum macOS {info['minos']}, expected the deployment target {deployment_target}")
    for dylib in info["dylibs"]:
        torch_lib = dylib.startswith("@rpath/") and torch_provides(dylib.removeprefix("@rpath/"))
        if dylib not in SYSTEM_LIBRARIES and not torch_lib:
            found.append(f"{name} links {dylib}: neither libSystem, libc++ nor a torch @rpath library")
    for symbol, ordinal in info["undefined"]:
        if not 1 <= ordinal <= len(info["dylibs"]) and not RUNTIME_LOOKUP.fullmatch(symbol):
            found.append(f"{name}: symbol {symbol} is bound to no library (looked up at load time)")
    return found + signature_problems(name, data, info["signature"])


def signature_problems(name: str, data: bytes, signature: tuple[int, int] | None) -> list[str]:
    """The embedded ad-hoc signature's page hashes must match the file (SHA-256 CodeDirectory)."""
    if signature is None:
        return [f"{name}: no code signature (arm64 macOS loads only signed code)"]
    offset, size = signature
    blob = data[offset:offset + size]
    try:
        magic, _, count = struct.unpack_from(">III", blob)
        if magic != CSMAGIC_EMBEDDED_SIGNATURE:
            return [f"{name}: code signature has a bad magic {magic:#x}"]
        slots = [struct.unpack_from(">II", blob, 12 + 8 * i) for i in range(count)]
        (cd_offset,) = [at for kind, at in slots if kind == 0] or [None]
        if cd_offset is None:
            return [f"{name}: code signature has no CodeDirectory"]
        cd_magic, _, _, flags, hash_offset, _, _, n_code, code_limit = struct.unpack_from(">9I", blob, cd_offset)
        hash_size, hash_type, _, page_shift = struct.unpack_from(">4B", blob, cd_offset + 36)
    except (struct.error, ValueError):
        return [f"{name}: code signature is truncated"]
    if cd_magic != CSMAGIC_CODEDIRECTORY or hash_type != CS_HASHTYPE_SHA256 or not flags & CS_ADHOC:
        return [f"{name}: expected an ad-hoc SHA-256 CodeDirectory (magic {cd_magic:#x}, hash type {hash_type}, "
                f"flags {flags:#x})"]
    if code_limit != offset:
        return [f"{name}: the signature covers {code_limit} bytes, but the code is {offset} bytes"]
    page = 1 << page_shift
    for i in range(n_code):
        expected = blob[cd_offset + hash_offset + i * hash_size:][:hash_size]
        if hashlib.sha256(data[i * page:min((i + 1) * page, code_limit)]).digest()[:hash_size] != expected:
            return [f"{name}: code signature does not match page {i} (modified after signing)"]
    if n_code != -(-code_limit // page):
        return [f"{name}: code signature hashes {n_code} pages, the code has {-(-code_limit // page)}"]
    return []


def deployment_target(platform_tag: str) -> str:
    """macosx_14_0_arm64 -> 14.0"""
    match = re.fullmatch(r"macosx_(\d+)_(\d+)_\w+", platform_tag)
    if not match:
        raise ValueError(f"not a macOS platform tag: {platform_tag}")
    return f"{match[1]}.{match[2]}"
