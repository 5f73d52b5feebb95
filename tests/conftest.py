"""Shared fixtures. Tests that need the Arm toolchain skip without it, except in CI (CI=true), where
a missing toolchain is a failure: the firmware checks must really run there."""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def require_tools(*names: str) -> None:
    """Skip (or, under CI=true, fail) unless every named executable is on PATH."""
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        message = f"missing {', '.join(missing)} (apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm)"
        if IN_CI:
            pytest.fail(message + " — required under CI=true")
        pytest.skip(message)
