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
        message = (f"missing {', '.join(missing)} (`make toolchain` as root, or apt-get install gcc-arm-none-eabi "
                   "libnewlib-arm-none-eabi qemu-system-arm clang)")
        if IN_CI:
            pytest.fail(message + " — required under CI=true")
        pytest.skip(message)


@pytest.fixture(scope="session")
def digits_run_dir(tmp_path_factory):
    """A small run folder (handwritten digits, digits-cnn, 2 pretraining epochs), built once per test
    process and shared: tests read it and write their outputs elsewhere (copy it to change it)."""
    from zo_edge.build import build_run

    out = tmp_path_factory.mktemp("shared") / "digits"
    build_run(out, dataset="digits", epochs=2, log=lambda m: None)
    return out


@pytest.fixture(scope="session")
def kws_run_dir(tmp_path_factory):
    """The default model's run folder (spoken digits, DS-CNN, 2 pretraining epochs), built once per test
    process and shared read-only."""
    from zo_edge.build import build_run

    out = tmp_path_factory.mktemp("shared") / "kws"
    build_run(out, epochs=2, log=lambda m: None)
    return out


@pytest.fixture(scope="session")
def digits_cosine_run_dir(tmp_path_factory):
    """The digits run with the reference's cosine classifier (``--head cosine``), shared read-only."""
    from zo_edge.build import build_run

    out = tmp_path_factory.mktemp("shared") / "digits-cosine"
    build_run(out, dataset="digits", epochs=2, head="cosine", log=lambda m: None)
    return out
