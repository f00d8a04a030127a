"""The names the pipeline gives and reads, in one place: GitHub artifact names, the local version
label of a per-torch wheel, build folders inside a wheel, and METADATA headers. Standard library
only (the download verb and cibuildwheel's hooks import it)."""

from __future__ import annotations

import email.message
import email.parser
import re

ARTIFACT_PREFIX = "wheels-"
# <package>/_builds/<build>/build.json: the layout of every extension this pipeline builds (any
# package name: the verbs read it from the wheel, nothing here is torch-segment-ops' own)
# A build folder's name is what the loader (torch_segment_ops/_loader.py BUILD_NAME) loads: not
# __pycache__ or a dot folder, which it skips.
BUILD_NAME = r"[A-Za-z0-9][^/]*"
BUILD_RECORD = re.compile(rf"^([A-Za-z_]\w*)/_builds/({BUILD_NAME})/build\.json$")
BUILD_DIR = re.compile(rf"^([A-Za-z_]\w*)/_builds/({BUILD_NAME})/")  # package, build folder


def artifact(wheel_platform: str, torch_minor: str | None = None) -> str:
    """wheels-manylinux_2_28_aarch64 (a final wheel) or wheels-<platform>-torch2.14 (a per-torch build)."""
    return ARTIFACT_PREFIX + wheel_platform + (f"-torch{torch_minor}" if torch_minor else "")


def artifact_platform(name: str) -> str | None:
    """The platform tag an artifact name holds wheels for (None: not one of our wheel artifacts)."""
    if not name.startswith(ARTIFACT_PREFIX):
        return None
    return name.removeprefix(ARTIFACT_PREFIX).split("-torch")[0]


def torch_label(torch_minor: str) -> str:
    """Local version label of a per-torch wheel: 2.13 -> pt213."""
    return "pt" + torch_minor.replace(".", "")


def is_per_torch_intermediate(wheel_name: str) -> bool:
    """A per-torch wheel before merging carries a local label (0.1.0+pt213); a final wheel none."""
    return "+" in wheel_name


def cuda_build(major: str) -> str:
    """The build folder of a CUDA build: 13 -> cu13 (setup.py's `_builds/cu<major>/`)."""
    return f"cu{major}"


def metadata(text: str) -> email.message.Message:
    """The headers of a METADATA (or PKG-INFO) text."""
    return email.parser.HeaderParser().parsestr(text, headersonly=True)
