"""The C twin of the int8 learner's integer arithmetic: renders zoedge_fixed.h/.c from jinja2 templates.

The C functions (generator, Q16 loss and softmax, multipliers, norm clip, momentum, the ParamVector
probes and update, the zeroth-order and classifier gradients) reproduce ``zo_edge.prng``,
``zo_edge.learners.fixed``, ``zo_edge.learners.int8_state`` and ``zo_edge.learners.int8_learner`` bit
for bit; tests/test_firmware_fixed.py holds them to it. Python passes plain values only — the
constants of the contract and the ln table, read from those modules so the two sides cannot drift.
Everything per model (the exp table of the logits scale, multipliers, perturbation steps, segment
descriptors) is an argument of the C functions, rendered elsewhere.

Helpers here turn a ParamVector and a learning rate into the compact per-channel constants the C
functions take (``vector_layout``, ``per_channel_multipliers``), for the model exporter and the tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zo_edge import prng
from zo_edge.learners import fixed, int8_state
from firmware_export.render import environment

TEMPLATES_DIR = Path(__file__).parent / "templates"
LIBRARY_FILES = ("zoedge_fixed.h", "zoedge_fixed.c")
TEST_MAIN_FILE = "fixed_test_main.c"

SEG_INT8, SEG_INT8_M16, SEG_INT32 = 0, 1, 2  # zoedge_segment_t.kind
CLIP_OFF = -1  # ZOEDGE_CLIP_OFF


_environment = environment  # the shared template environment (firmware_export/render.py)


def template_values() -> dict:
    """The plain values the templates need (checked against what the C code assumes about them)."""
    log2 = [int(v) for v in fixed.LOG2_TABLE]
    if len(log2) != 257 or log2[256] != 1 << 16 or max(log2[:256]) >= 1 << 16 or log2[0] != 0:
        raise ValueError("fixed.LOG2_TABLE no longer has the shape the C code stores (uint16[256] + 2^16)")
    return {
        "loss_bits": fixed.LOSS_BITS,
        "grad_bits": fixed.GRAD_BITS,
        "grad_limit": fixed.GRAD_LIMIT,
        "momentum_limit": fixed.MOMENTUM_LIMIT,
        "sr_bits": fixed.SR_BITS,
        "ln2_q16": fixed.LN2_Q16,
        "log2_table": log2,
        "stream_perturbation": prng.STREAM_PERTURBATION,
        "stream_rounding": prng.STREAM_ROUNDING,
        "sr_query_zo": int8_state.SR_QUERY_ZO,
        "sr_query_classifier": int8_state.SR_QUERY_CLASSIFIER,
    }


def render_fixed(out_dir: str | Path, *, test_main: bool = False) -> list[Path]:
    """Write zoedge_fixed.h and .c into out_dir (created if needed) and return their paths.

    test_main also writes fixed_test_main.c, the host program tests/test_firmware_fixed.py drives.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env = _environment()
    values = template_values()
    paths = []
    for name in list(LIBRARY_FILES) + ([TEST_MAIN_FILE] if test_main else []):
        path = out / name
        path.write_text(env.get_template(name + ".j2").render(**values))
        paths.append(path)
    return paths


# -- per-model constants in the compact form the C functions take ----------------------------------------

def vector_layout(vec) -> list[dict]:
    """Segment descriptors of a ParamVector: kind, start, size, inner (elements per channel), chan_start.

    The channel axis is axis 0 (as ParamVector assumes); a per-tensor scale is one channel per row of
    axis 0 all the same, kept per row so the tables stay simple.
    """
    out, chan = [], 0
    for s in vec.segments:
        units = int(vec.units[s.start]) if s.size else 1
        kind = SEG_INT32 if s.dtype != np.int8 else (SEG_INT8_M16 if units > 1 else SEG_INT8)
        channels = int(s.shape[0]) if s.shape else 1
        out.append({"role": s.role, "kind": kind, "start": s.start, "size": s.size, "inner": s.size // channels,
                    "chan_start": chan, "channels": channels})
        chan += channels
    return out


def per_channel(vec, per_element: np.ndarray) -> np.ndarray:
    """One value per channel from a per-element array that must be constant within each channel."""
    per_element = np.asarray(per_element)
    rows = []
    for seg in vector_layout(vec):
        block = per_element[seg["start"] : seg["start"] + seg["size"]].reshape(seg["channels"], seg["inner"])
        if not (block == block[:, :1]).all():
            raise ValueError(f"{seg['role']}: a per-element constant varies within a channel")
        rows.append(block[:, 0])
    return np.concatenate(rows) if rows else np.zeros(0, per_element.dtype)


def per_channel_multipliers(vec, multiplier: fixed.Multiplier) -> np.ndarray:
    """A per-element fixed.Multiplier over vec as int64 [K, 2] rows (mult, rshift): zoedge_multiplier_t[K]."""
    return np.stack([per_channel(vec, multiplier.mult), per_channel(vec, multiplier.rshift)], axis=1)


def clip_q20(clip: float) -> int:
    """zoedge_update_cfg_t.clip_q20 for a configured clip, as fixed.clip_norm reads it: clip <= 0 is off
    (CLIP_OFF); a positive clip below 2^-21 rounds to 0, which clips every gradient to zero, as in Python."""
    return round(clip * (1 << fixed.GRAD_BITS)) if clip > 0 else CLIP_OFF
