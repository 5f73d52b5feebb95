"""The budget of one sweep cell on a device: RAM, flash, instructions and time per training step, fits.

RAM and flash are ``zo_edge.memory.estimate`` of the firmware the method would run: the exported
train step (``zo-fc``; ``zo`` and ``head`` export the same step with other vectors) for the
zeroth-order methods and ``head``, a device backward pass for ``fo``, and inference alone for
``frozen``. Instructions per step are estimated from the multiply-accumulates of the step's
heaviest form (the classifier training too):

    instructions ≈ INSTRUCTIONS_PER_MAC · B · (prefix MACs + passes · suffix MACs)

with passes = 2q+1 (zo-fc), 2q (zo), 1 (head), 3 (fo: a forward and, counted as twice its MACs, a
backward pass through the suffix) and 0 (frozen: no step). INSTRUCTIONS_PER_MAC depends on the
kernels the device's core runs and is measured on the exported firmware of the default DS-CNN in
QEMU (2,495,104 MACs per inference; the README's firmware section): the DSP kernels on the Cortex-M4F,
6,235,798 instructions per inference (2.50 per MAC), and the reference kernels on the Cortex-M3,
33,489,117 (13.42 per MAC). Cores with the DSP extension get the first figure (the M55's MVE kernels
are not measured yet and get it too), the others the second. Time per step is a lower bound: those
instructions at one per cycle at the device's clock. ``zo-edge verify-firmware`` measures one
configuration exactly. (When ``zo_edge.kernel_spec`` carries per-path costs, they belong there.)
"""

from __future__ import annotations

import dataclasses

DEFAULT_MACS = 2_495_104  # one inference of the default DS-CNN
INSTRUCTIONS_PER_MAC = {"dsp": 6_235_798 / DEFAULT_MACS, "ref": 33_489_117 / DEFAULT_MACS}  # measured, see above
DSP_CORES = ("cortex-m4", "cortex-m7", "cortex-m33", "cortex-m35p", "cortex-m55", "cortex-m85")
CONFIGURATION = {"zo-fc": "zo-fc", "zo": "zo-fc", "head": "zo-fc", "fo": "fo", "frozen": "inference"}


def suffix_passes(config) -> int:
    """Suffix passes per sample of a step in its heaviest form (the module docstring)."""
    return {"zo-fc": 2 * config.q + 1, "zo": 2 * config.q, "head": 1, "fo": 3, "frozen": 0}[config.method]


def split_macs(run) -> dict:
    """MACs per sample of the prefix and of one suffix pass, split where the learners split."""
    from zo_edge.cost import split_macs as macs
    from zo_edge.engine import Engine

    plan = run.plan
    return macs(Engine(run.graph).split_frozen(plan.trainable_indices(), outputs=[plan.classifier.logits]))


def budget(run, config, device, macs: dict | None = None) -> dict:
    """The device budget of ``config`` on ``run``'s model (module docstring) as a JSON-ready dict."""
    from zo_edge.memory import estimate

    configuration = CONFIGURATION[config.method]
    memory = estimate(run, dataclasses.replace(config, mode="int8"), configuration)
    macs = macs or split_macs(run)
    passes = suffix_passes(config)
    work = config.batch_size * (macs["prefix"] + passes * macs["suffix"]) if passes else 0
    kernels = "dsp" if device.core in DSP_CORES else "ref"
    instructions = int(round(INSTRUCTIONS_PER_MAC[kernels] * work))
    ram, flash = int(memory.ram_bytes), int(memory.flash_bytes)
    return {
        "configuration": configuration,
        "ram_bytes": ram,
        "flash_bytes": flash,
        "suffix_passes_per_sample": passes,
        "kernels": kernels,
        "instructions_per_mac": INSTRUCTIONS_PER_MAC[kernels],
        "instructions_per_step": instructions,
        "seconds_per_step": instructions / device.clock_hz,
        "fits": ram <= device.sram_bytes and flash <= device.flash_bytes,
    }
