"""Export the int8 learner's update step as C: renders zoedge_train.h/.c from jinja2 templates.

``render_train(run, config, out_dir)`` builds an ``Int8Learner(run, config)`` and reads from it every
number the C step needs — the ParamVectors (segments, storage kinds, initial masters), the perturbation
steps k, the loss tables, the zeroth-order gradient multipliers for the configured batch size, the
update multipliers of lr and fc_lr, the classifier's h zero point and gradient multipliers, momentum,
clip and seed — so the simulator and the firmware share one source of numbers. The C (templates
``zoedge_train.{h,c}.j2``) drives the exported model (``model_export``: ``zoedge_run_prefix`` once per
sample, ``zoedge_run_suffix`` per probe) and the integer twin (``fixed_export``: ``zoedge_probe``,
``zoedge_zo_update``, ``zoedge_update``, loss and softmax). tests/test_firmware_train.py holds the
result to the simulator byte for byte.

Methods: ``zo-fc`` (zeroth order on the adapter, first order on the classifier), ``zo`` (zeroth
order on adapter and classifier), ``head`` (first order on the classifier), ``frozen`` (a step that
trains nothing, as the simulator's ``fit_task`` does for it). ``fo`` and float mode have no device
twin and are refused.

The learned state travels as one blob (``state_blob`` is its Python twin, ``parse_state_blob`` reads
one back into a learner state): all integers little-endian,
    u32 state tag  (ZOEDGE_TRAIN_STATE_TAG: CRC-32 of the layout and the model, see ``state_tag``)
    u32 step
    per vector (zeroth order, then classifier): the masters in flat order (int8: 1 byte, int16
    master: 2, int32 bias: 4), then the Q20 velocities as int32 when momentum is on. A cosine
    classifier (``zo_edge.learners.cosine``) stores its unit rows (int16, Q14) then sigma (int32, Q16),
    then its velocities (rows, then sigma).

The learning-rate schedule is a table of Q16 factors per epoch of a task, made here from the
configuration (``LearnerConfig.lr_table_q16``: the simulator's own numbers) and set on the device by
``zoedge_train_set_epoch(epoch)`` before a step.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firmware_export import fixed_export
from firmware_export.model_export import build_context
from firmware_export.render import render
from zo_edge import memory
from zo_edge.errors import ZoEdgeError
from zo_edge.learners import cosine, fixed
from zo_edge.learners.config import LearnerConfig

LIBRARY_FILES = ("zoedge_train.h", "zoedge_train.c")
TEST_MAIN_FILE = "host_train_main.c"
BLOB_VERSION = 1
METHODS = ("zo-fc", "zo", "head", "frozen")
KIND_CTYPE = {fixed_export.SEG_INT8: "int8_t", fixed_export.SEG_INT8_M16: "int16_t",
              fixed_export.SEG_INT32: "int32_t"}
KIND_BLOB = {fixed_export.SEG_INT8: np.dtype("<i1"), fixed_export.SEG_INT8_M16: np.dtype("<i2"),
             fixed_export.SEG_INT32: np.dtype("<i4")}  # a master's bytes in the blob
PER_ROW = 12
SPLIT_SCHEDULE = 1  # model_export.plan_arena's schedules: [graph order, prefix then suffix]


@dataclass
class ExportedTrain:
    out_dir: Path
    files: list
    learner: object  # the Int8Learner the numbers came from (fresh: step 0)
    batch: int
    state_bytes: int
    state_tag: int
    ram_bytes: int  # static RAM of zoedge_train.c (the model's RAM tensors are zoedge_model.c's)
    classifier_layout: str | None = None  # "accumulate" or "per_sample" (None: no classifier step)


def _rows(values) -> list[list[int]]:
    flat = [int(v) for v in np.ravel(values)]
    return [flat[i : i + PER_ROW] for i in range(0, len(flat), PER_ROW)]


def _pairs(rows) -> list[list[int]]:
    """[K, 2] (mult, rshift) rows as plain pairs: one zoedge_multiplier_t each."""
    return [[int(m), int(r)] for m, r in np.asarray(rows)]


def export_learner(run: dict, config: LearnerConfig):
    """The Int8Learner whose numbers the C gets; refuses what has no device twin (one line)."""
    from zo_edge.learners.int8_learner import Int8Learner

    config.check()
    if config.mode != "int8":
        raise ZoEdgeError(f"--mode {config.mode} has no firmware twin; export with --mode int8 (device mode)")
    if config.method not in METHODS:
        raise ZoEdgeError(f"--method {config.method} has no firmware twin (a device does not backprop through "
                          f"the adapter); export one of {', '.join(METHODS)}")
    return Int8Learner(run, config)


# -- the state blob -------------------------------------------------------------------------------------
def _vectors(learner) -> list[tuple[str, object]]:
    return [(name, vec) for name, vec in (("zo", learner.zo), ("fc", learner.fc)) if vec is not None]


def _layout(vec) -> list[dict]:
    return fixed_export.vector_layout(vec)


def _stored(name: str, vec) -> list[tuple[str, str, np.dtype, np.ndarray]]:
    """What a vector's blob part holds before its velocities: (key, part, little-endian dtype, values) per
    part, in blob order; ``key`` is the learner state's key the part belongs to."""
    if isinstance(vec, cosine.CosineHead):
        return [(f"{name}.u", "u", np.dtype("<i2"), vec.u.ravel()),
                (f"{name}.sigma", "sigma", np.dtype("<i4"), np.atleast_1d(vec.sigma))]
    return [(f"{name}.master", s["role"], KIND_BLOB[s["kind"]], vec.master[s["start"] : s["start"] + s["size"]])
            for s in _layout(vec)]


def state_tag(learner) -> int:
    """CRC-32 of what a blob holds: the layout (segments, storage kinds, momentum) and the model bytes,
    so a blob of another model or configuration is refused by zoedge_train_state_load."""
    desc = {"version": BLOB_VERSION, "method": learner.config.method, "momentum": bool(learner.config.momentum),
            "model_crc32": zlib.crc32(learner.run.tflite),
            "vectors": {name: [[s["role"], s["kind"], s["size"]] for s in _layout(vec)]
                        if not isinstance(vec, cosine.CosineHead)
                        else [["cosine", part, dtype.str, int(values.size)] for _, part, dtype, values in _stored(name, vec)]
                        for name, vec in _vectors(learner)}}
    return zlib.crc32(json.dumps(desc, sort_keys=True).encode())


def state_size(learner) -> int:
    n = 8
    for name, vec in _vectors(learner):
        n += sum(dtype.itemsize * values.size for _, _, dtype, values in _stored(name, vec))
        if learner.config.momentum:
            n += 4 * vec.n
    return n


def state_blob(learner) -> bytes:
    """The bytes zoedge_train_state_save writes for this learner's state (velocity not yet used: zeros)."""
    parts = [np.array([state_tag(learner), learner.step & 0xFFFFFFFF], dtype="<u4").tobytes()]
    for name, vec in _vectors(learner):
        parts += [values.astype(dtype).tobytes() for _, _, dtype, values in _stored(name, vec)]
        if learner.config.momentum:
            v = vec.velocity if vec.velocity is not None else np.zeros(vec.n, np.int64)
            parts.append(v.astype("<i4").tobytes())
    blob = b"".join(parts)
    assert len(blob) == state_size(learner)
    return blob


def parse_state_blob(learner, blob: bytes) -> dict:
    """A blob as the learner's state dict (``Int8Learner.load_state``); raises ZoEdgeError if it is not one."""
    if len(blob) != state_size(learner):
        raise ZoEdgeError(f"the state has {len(blob)} bytes; this learner's has {state_size(learner)}")
    tag, step = np.frombuffer(blob[:8], "<u4")
    if int(tag) != state_tag(learner):
        raise ZoEdgeError(f"the state's tag {int(tag):#010x} is not this export's ({state_tag(learner):#010x})")
    out, pos = {"step": np.array(int(step))}, 8
    for name, vec in _vectors(learner):
        parts = {}
        for key, _, dtype, values in _stored(name, vec):
            parts.setdefault(key, []).append(np.frombuffer(blob, dtype, values.size, pos).astype(np.int64))
            pos += dtype.itemsize * values.size
        out.update({key: np.concatenate(v) for key, v in parts.items()})
        if isinstance(vec, cosine.CosineHead):
            out[f"{name}.sigma"] = out[f"{name}.sigma"][0]
        if learner.config.momentum:
            out[f"{name}.velocity"] = np.frombuffer(blob, "<i4", vec.n, pos).astype(np.int64)
            pos += 4 * vec.n
    return out


# -- the render context -----------------------------------------------------------------------------
def _vector_context(name: str, vec, learner, lr: float, model_state: dict, aliased: bool) -> dict:
    """A ParamVector as the template takes it. ``aliased``: int8/int32 masters are the model's RAM
    tensors themselves (the classifier vector, never perturbed); otherwise every master is its own array."""
    segments = []
    for s in _layout(vec):
        role = s["role"]
        if role not in model_state:
            raise ZoEdgeError(f"{role} is not RAM state of the exported model")
        model = model_state[role]
        if model["size"] != s["size"]:
            raise ZoEdgeError(f"{role}: the model holds {model['size']} values, the learner {s['size']}")
        own = s["kind"] == fixed_export.SEG_INT8_M16 or not aliased
        master = f"zoedge_train_{name}_{model['name']}_master" if own else f"zoedge_{model['name']}"
        segments.append({**s, "model_array": f"zoedge_{model['name']}", "model_macro": model["macro"],
                         "ctype": KIND_CTYPE[s["kind"]], "view_ctype": model["ctype"], "own_master": own,
                         "master": master, "bytes": KIND_BLOB[s["kind"]].itemsize})
    try:
        update = vec.update_multiplier(lr)  # the ParamVector's own (and cached) multiplier
    except ValueError as exc:
        raise ZoEdgeError(f"the {name} learning rate {lr:g} cannot be held as an integer multiplier "
                          f"({exc})") from None
    return {"name": name, "cosine": False, "n": vec.n, "channels": sum(s["channels"] for s in segments),
            "segments": segments,
            "update_mult": _pairs(fixed_export.per_channel_multipliers(vec, update)),
            "momentum": bool(learner.config.momentum)}


def _cosine_context(vec, lr: float, model_state: dict, momentum: bool) -> dict:
    """A cosine classifier (``zo_edge.learners.cosine.CosineHead``) as the template takes it: its initial unit
    rows and sigma, the per-row multipliers of its int8 view, the update multipliers of u and sigma."""
    role = "classifier.weights"
    if role not in model_state or model_state[role]["size"] != vec.n - 1:
        raise ZoEdgeError(f"{role} is not RAM state of the exported model, or not of {vec.n - 1} values")
    model = model_state[role]
    classes, features = vec.shape
    u0, sigma0 = vec.initial
    update = vec.update_multiplier(lr)
    view = vec.view_multiplier
    return {"name": "fc", "cosine": True, "n": vec.n, "classes": classes, "segments": [], "momentum": momentum,
            "model_array": f"zoedge_{model['name']}", "model_macro": model["macro"],
            "u_init": _rows(u0), "sigma_init": int(sigma0), "sigma_min": cosine.SIGMA_MIN,
            "sigma_max": cosine.SIGMA_MAX, "u_bits": cosine.U_BITS, "sigma_bits": cosine.SIGMA_BITS,
            "view_mult": [[int(view.mult[c * features]), int(view.rshift[c * features])] for c in range(classes)],
            "u_mult": [int(update.mult[0]), int(update.rshift[0])],
            "sigma_mult": [int(update.mult[-1]), int(update.rshift[-1])]}


def _lr_table(cfg: LearnerConfig, part: str) -> list[int]:
    """The schedule's Q16 factor per epoch (one entry when it is constant)."""
    return cfg.lr_table_q16(part) if cfg.lr_schedule != "constant" else [fixed.ONE_Q16]


def train_context(learner, classifier_layout: str = "auto") -> dict:
    """Everything the templates need, as plain numbers and lists. ``classifier_layout``: how the classifier's
    batch gradient is held, "accumulate", "per_sample" or "auto" (the smaller; same integers either way)."""
    if classifier_layout not in ("auto", *memory.CLASSIFIER_LAYOUTS):
        raise ZoEdgeError(f"unknown classifier layout {classifier_layout!r}; one of auto, "
                          f"{', '.join(memory.CLASSIFIER_LAYOUTS)}")
    cfg = learner.config
    graph, plan = learner.graph, learner.plan
    B = cfg.batch_size
    model, arena = build_context(graph, plan)
    model_state = {s["role"]: s for s in model["state"]}
    C = learner.num_classes
    logits = graph.tensors[plan.classifier.logits]
    if logits.size_bytes != C:
        raise ZoEdgeError(f"the logits hold {logits.size_bytes} values, the classifier {C}")

    ctx = {"method": cfg.method, "batch": B, "q": cfg.q, "num_classes": C, "seed": int(cfg.seed) & 0xFFFFFFFF,
           "mu_q15": fixed.momentum_q15(cfg.momentum), "momentum": bool(cfg.momentum), "source": model["source"],
           "logits_scale_q24": int(learner.tables.scale_q24), "exp_q16": _rows(learner.tables.exp_q16),
           "lr": cfg.lr, "fc_lr": cfg.fc_lr, "clip": cfg.clip, "momentum_value": cfg.momentum,
           "master": cfg.master, "zo": None, "fc": None, "logits_tensor": int(plan.classifier.logits)}
    if learner.zo is not None:
        zo = _vector_context("zo", learner.zo, learner, cfg.lr, model_state, aliased=False)
        grad = learner.zo_gradient_multiplier(B)  # the simulator's own multipliers
        zo.update(steps_k=_rows(fixed_export.per_channel(learner.zo, learner.steps_k)),
                  grad_mult=_pairs(fixed_export.per_channel_multipliers(learner.zo, grad)),
                  clip_q20=fixed_export.clip_q20(cfg.clip), lr_table=_lr_table(cfg, "adapters"))
        ctx["zo"] = zo
    if isinstance(learner.fc, cosine.CosineHead):
        fc = _cosine_context(learner.fc, cfg.fc_lr, model_state, bool(cfg.momentum))
    elif learner.fc is not None:
        fc = _vector_context("fc", learner.fc, learner, cfg.fc_lr, model_state, aliased=True)
    if learner.fc is not None:
        w = graph.tensors[plan.classifier.weights]
        h = graph.tensors[learner.features_index]
        C_, D = (int(v) for v in w.shape)
        if C_ != C or int(np.prod(h.shape)) != D or learner.fc.n != C * D + (1 if fc.get("cosine") else C):
            raise ZoEdgeError(f"the classifier is {tuple(w.shape)} on an input of {tuple(h.shape)}; "
                              "the firmware takes a fully connected [classes, features] classifier")
        _check_h_survives_suffix(learner.features_index, model, arena)
        mult_w, mult_b = learner.classifier_gradient_multipliers(B)  # the simulator's own multipliers
        # |e| <= 2^16 and |h - zp| <= 255: a sum over B samples fits int32 while B * 2^16 * 255 < 2^31
        wide = memory.wide_accumulator(B)
        # the smaller of two layouts giving the same integers (zo_edge.memory.classifier_layout_bytes)
        layout, _ = memory.classifier_layout(B, C, D, model["arena_size"], classifier_layout)
        fc.update(features=D, h_tensor=int(learner.features_index), h_zero_point=int(learner.h_zero_point),
                  mult_w=[int(mult_w.mult[0]), int(mult_w.rshift[0])],
                  mult_b=[int(mult_b.mult[0]), int(mult_b.rshift[0])], wide_accumulator=wide,
                  layout=layout, grad_in_arena=model["arena_size"] >= 4 * (C * D + C),
                  clip_q20=fixed_export.CLIP_OFF,  # Int8Learner: the classifier's update is never clipped
                  grad_n=C * D + (0 if fc.get("cosine") else C), cosine=bool(fc.get("cosine")),
                  lr_table=_lr_table(cfg, "classifier"))
        ctx["fc"] = fc
    ctx["vectors"] = [v for v in (ctx["zo"], ctx["fc"]) if v is not None]
    ctx["ram"] = _ram_items(ctx)
    ctx["state_tag"] = state_tag(learner)
    ctx["state_bytes"] = state_size(learner)
    return ctx


def _ram_items(ctx) -> list[tuple[str, int]]:
    """Static RAM of zoedge_train.c beyond the model's tensors, item by item (what the header documents
    and what arm-none-eabi-size reports as the object's bss, give or take alignment)."""
    items = []
    for v in ctx["vectors"]:
        for s in v["segments"]:
            if s["own_master"]:
                items.append((f"{s['role']} master ({v['name']})", s["size"] * s["bytes"]))
        if v.get("cosine"):
            items.append(("cosine classifier: unit rows (int16) and sigma (int32)", 2 * (v["n"] - 1) + 4))
        if v["momentum"]:
            items.append((f"momentum ({v['name']}, int32 Q20)", 4 * v["n"]))
    if ctx["zo"] is not None:
        items.append(("probe loss sums and differences (int64)", 8 * 3 * ctx["q"]))
    fc = ctx["fc"]
    if fc is not None and fc["layout"] == "per_sample":
        B, C, F = ctx["batch"], ctx["num_classes"], fc["features"]
        items += [(f"classifier layout per_sample: softmax errors of the batch (int32, {B} x {C})", 4 * B * C),
                  (f"classifier layout per_sample: classifier inputs of the batch (int8, {B} x {F})", B * F)]
        if not fc["grad_in_arena"]:
            items.append(("classifier gradient (int32; the arena is too small to hold it)", 4 * fc["grad_n"]))
    elif fc is not None:
        if fc["wide_accumulator"]:
            items += [("classifier layout accumulate: gradient accumulators (int64)", 8 * fc["grad_n"]),
                      ("classifier gradient", 4 * fc["grad_n"])]
        else:
            items.append(("classifier layout accumulate: gradient accumulators (int32, the gradient in place)",
                          4 * fc["grad_n"]))
        items.append(("softmax errors of one sample", 4 * ctx["num_classes"]))
    items.append(("step, events, flags, the open batch's allowed classes",
                  20 + 4 * (fc is not None) + ctx["num_classes"]))
    items.append(("learning-rate schedule factors (int32, one per vector)", 4 * len(ctx["vectors"])))
    return items


def _check_h_survives_suffix(h_index: int, model: dict, plan) -> None:
    """The classifier's input is read after zoedge_run_suffix returns: no tensor written after its last
    read in the prefix-then-suffix schedule may share its arena bytes."""
    if model["tensors"].get(h_index, {}).get("where") != "arena":
        raise ZoEdgeError(f"the classifier input (tensor {h_index}) is not an activation of the exported model")
    root = plan.root[h_index]
    lo, hi = plan.offsets[h_index], plan.offsets[h_index] + plan.nbytes[h_index]
    spans = plan.lifetimes[SPLIT_SCHEDULE]
    last = spans[root][1]
    for other, (first, _) in spans.items():
        if other != root and first > last:
            o_lo = plan.offsets[other]
            if o_lo < hi and lo < o_lo + plan.nbytes[other]:
                raise ZoEdgeError(f"the classifier input (tensor {h_index}) is overwritten before the suffix "
                                  "ends; the firmware reads it after the suffix")


def render_train(run: dict, config: LearnerConfig, out_dir, *, test_main: bool = False,
                 classifier_layout: str = "auto") -> ExportedTrain:
    """Write zoedge_train.h and .c (and host_train_main.c with ``test_main``) into out_dir.

    They go with the model (``model_export.render_model`` on the same run, default trainable roles) and
    the integer twin (``fixed_export.render_fixed``) in one build. ``classifier_layout``: see
    ``train_context`` ("auto": the smaller; ZOEDGE_TRAIN_CLASSIFIER_LAYOUT in the header says which).
    """
    learner = export_learner(run, config)
    ctx = train_context(learner, classifier_layout)
    out = Path(out_dir)
    names = list(LIBRARY_FILES) + ([TEST_MAIN_FILE] if test_main else [])
    files = [render(name + ".j2", out / name, **ctx) for name in names]
    return ExportedTrain(out_dir=out, files=files, learner=learner, batch=config.batch_size,
                         state_bytes=ctx["state_bytes"], state_tag=ctx["state_tag"],
                         ram_bytes=sum(b for _, b in ctx["ram"]),
                         classifier_layout=ctx["fc"]["layout"] if ctx["fc"] else None)
