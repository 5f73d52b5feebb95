"""The budget of one sweep cell on a device: RAM, flash, instructions and time per training step, fits.

RAM and flash are ``zo_edge.memory.estimate`` of the firmware the method would run: the exported
train step (``zo-fc``; ``zo`` and ``head`` export the same step with other vectors) for the
zeroth-order methods and ``head``, a device backward pass for ``fo``, and inference alone for
``frozen``, with the kernels' scratch of the core's instruction set. Instructions per step are those
of the step's heaviest form (the classifier training too):

    instructions ≈ B · (prefix + passes · suffix)

with prefix and suffix the instructions of one sample's frozen prefix and one suffix pass
(``zo_edge.profile.pass_instructions``: the kernels' per-path costs on the core's instruction set,
fitted to QEMU's exact counts) and passes = 2q+1 (zo-fc), 2q (zo), 1 (head), 3 (fo: a forward and,
counted as twice its work, a backward pass through the suffix) and 0 (frozen: no step). Perturbing,
the loss and the updates are left out, so time per step (those instructions at one per cycle at the
device's clock) is a lower bound; ``zo-edge verify-firmware`` measures one configuration exactly.
"""

from __future__ import annotations

import dataclasses

CONFIGURATION = {"zo-fc": "zo-fc", "zo": "zo-fc", "head": "zo-fc", "fo": "fo", "frozen": "inference"}


def suffix_passes(config) -> int:
    """Suffix passes per sample of a step in its heaviest form (the module docstring)."""
    return {"zo-fc": 2 * config.q + 1, "zo": 2 * config.q, "head": 1, "fo": 3, "frozen": 0}[config.method]


def split_instructions(run, device) -> dict:
    """Estimated instructions per sample of the prefix and of one suffix pass on the device's core."""
    from zo_edge.kernel_spec import CORE_ISA
    from zo_edge.profile import pass_instructions

    return pass_instructions(run, CORE_ISA[device.core])


def budget(run, config, device, per_pass: dict | None = None) -> dict:
    """The device budget of ``config`` on ``run``'s model (module docstring) as a JSON-ready dict."""
    from zo_edge.kernel_spec import CORE_ISA
    from zo_edge.memory import estimate

    configuration = CONFIGURATION[config.method]
    kernels = CORE_ISA[device.core]
    memory = estimate(run, dataclasses.replace(config, mode="int8"), configuration, isa=kernels)
    per_pass = per_pass or split_instructions(run, device)
    passes = suffix_passes(config)
    instructions = int(round(config.batch_size * (per_pass["prefix"] + passes * per_pass["suffix"]))) if passes else 0
    ram, flash = int(memory.ram_bytes), int(memory.flash_bytes)
    return {
        "configuration": configuration,
        "ram_bytes": ram,
        "flash_bytes": flash,
        "suffix_passes_per_sample": passes,
        "kernels": kernels,
        "instructions_per_pass": {"prefix": int(per_pass["prefix"]), "suffix": int(per_pass["suffix"])},
        "instructions_per_step": instructions,
        "seconds_per_step": instructions / device.clock_hz,
        "fits": ram <= device.sram_bytes and flash <= device.flash_bytes,
    }
