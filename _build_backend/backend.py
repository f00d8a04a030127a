"""setuptools' PEP 517 backend, told what is being built.

The sdist is source only: it needs no torch and carries no torch label. A
wheel is compiled against the installed torch (see setup.py), but its metadata
(the hooks a frontend calls before building: what the build needs, the
wheel's METADATA) is not, so those hooks do not import torch: each hook runs
in a process of its own, and importing torch takes ~20 s under the qemu lane.
setup.py learns which one from the hook the frontend called, not from its
command line.
"""

import os
from contextlib import contextmanager

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403 (every other hook unchanged)

BUILDING = "TORCH_SEGMENT_OPS_BUILDING"  # read by setup.py


@contextmanager
def _building(kind):
    before = os.environ.get(BUILDING)
    os.environ[BUILDING] = kind
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(BUILDING, None)
        else:
            os.environ[BUILDING] = before


def get_requires_for_build_sdist(config_settings=None):
    with _building("sdist"):
        return _setuptools.get_requires_for_build_sdist(config_settings)


def build_sdist(sdist_directory, config_settings=None):
    with _building("sdist"):
        return _setuptools.build_sdist(sdist_directory, config_settings)


def get_requires_for_build_wheel(config_settings=None):
    with _building("metadata"):
        return _setuptools.get_requires_for_build_wheel(config_settings)


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    with _building("metadata"):
        return _setuptools.prepare_metadata_for_build_wheel(metadata_directory, config_settings)
