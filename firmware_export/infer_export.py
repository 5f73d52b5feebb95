"""``zo-edge export --tflite``: inference firmware for any supported int8 .tflite, no run folder needed.

The folder has the layout of a training export without the train step: the model and its kernels
(``model_export``, inference only: every weight in flash), the example app with its Makefile,
linker scripts, startup and README (``board``). The app infers the embedded samples; ``export.json``
(kind ``inference``) names them, and the folder keeps the two files ``zo-edge verify-firmware``
compares with: ``model.tflite`` (the model, byte for byte) and ``samples.npy`` (the int8 samples the
app embeds). The engine's outputs on them are the expected bytes, and the engine equals TFLM
(``zo-edge verify``), which ``verify-firmware`` checks on the same samples too.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np

from zo_edge.errors import ZoEdgeError
from zo_edge.outputs import check_output_folder, write_folder

MODEL_FILE = "model.tflite"
SAMPLES_FILE = "samples.npy"
SAMPLE_SEED = 0  # random samples: zo_edge.verify.random_inputs(graph, n, SAMPLE_SEED)


def _check_interface(graph, path) -> None:
    """One int8 input and one int8 output, as the firmware's zoedge_infer() takes them."""
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ZoEdgeError(f"{path} has {len(graph.inputs)} inputs and {len(graph.outputs)} outputs; the firmware "
                          "export takes one of each")
    for role, index in (("input", graph.inputs[0]), ("output", graph.outputs[0])):
        dtype = np.dtype(graph.tensors[index].dtype)
        if dtype != np.int8:
            raise ZoEdgeError(f"{path}'s {role} is {dtype.name}; the firmware takes int8 in and out (convert with "
                              "inference_input_type=tf.int8 and inference_output_type=tf.int8)")


def load_samples(graph, inputs_path=None, count: int = 8) -> tuple[np.ndarray, str]:
    """The int8 samples the app embeds, and a note on where they came from: ``inputs_path`` (an .npy of
    int8 samples [N, *input shape], or float features quantised with the model's input scale), else
    ``count`` random int8 samples over the whole range (seed ``SAMPLE_SEED``)."""
    from zo_edge.cli_options import load_npy
    from zo_edge.engine import Engine
    from zo_edge.verify import random_inputs

    engine = Engine(graph)
    if inputs_path is None:
        return random_inputs(graph, count, SAMPLE_SEED)[0], f"{count} random int8 samples (seed {SAMPLE_SEED})"
    x = load_npy(inputs_path, "--inputs")
    if x.dtype.kind == "f":
        if not np.all(np.isfinite(x)):
            raise ZoEdgeError(f"--inputs {inputs_path} holds NaN or infinite values; give finite features")
        x = engine.quantize_input(x)
    (x,) = engine.check_inputs([x])
    return np.ascontiguousarray(x, dtype=np.int8), f"the {len(x)} samples of {Path(inputs_path).name}"


def export_inference(tflite_path, out_dir, target: str = "cortex-m4", samples: int = 8, inputs_path=None,
                     force: bool = False, log=print) -> dict:
    """Write inference firmware for ``tflite_path`` into ``out_dir``; return the export.json content."""
    from firmware_export.board import TARGETS, render_build_files
    from firmware_export.export import FORMAT
    from firmware_export.model_export import render_model
    from zo_edge.qgraph import QGraph

    if target not in TARGETS:
        raise ZoEdgeError(f"unknown target {target!r} (--target); known: {', '.join(TARGETS)}")
    tflite_path = Path(tflite_path)
    inputs = (tflite_path, inputs_path)
    out = check_output_folder(out_dir, "firmware", force, inputs)
    graph = QGraph.load(tflite_path)
    _check_interface(graph, tflite_path)
    x, note = load_samples(graph, inputs_path, samples)
    with write_folder(out, "firmware", force, inputs) as tmp:
        model = render_model(graph, None, tmp)
        render_build_files(tmp, x, source=tflite_path.name, default_target=target, sample_note=note,
                           memory=[("activation arena", model.arena.size),
                                   *((f"kernel scratch ({isa})", n) for isa, n in model.scratch.items() if n)])
        (tmp / MODEL_FILE).write_bytes(graph.model_bytes)
        buffer = io.BytesIO()
        np.save(buffer, x)
        (tmp / SAMPLES_FILE).write_bytes(buffer.getvalue())
        meta = {
            "format": FORMAT,
            "kind": "inference",
            "model": MODEL_FILE,
            "model_sha256": hashlib.sha256(graph.model_bytes).hexdigest(),
            "source": str(tflite_path.resolve()),
            "target": target,
            "samples": {"count": int(len(x)), "file": SAMPLES_FILE, "note": note},
            "arena_bytes": int(model.arena.size),
            "scratch_bytes": {isa: int(n) for isa, n in model.scratch.items()},
        }
        (tmp / "export.json").write_text(json.dumps(meta, indent=2) + "\n")
    log(f"wrote {out}: inference firmware of {tflite_path.name} ({len(graph.ops)} ops, arena {model.arena.size} "
        f"bytes), {len(x)} samples")
    return meta


def read_inference_export(fw_dir, meta: dict):
    """(graph, samples) of an inference export, both from the folder; one-line errors when they are gone
    or were changed since the export."""
    from zo_edge.qgraph import QGraph

    fw_dir = Path(fw_dir)
    model_path, samples_path = fw_dir / str(meta.get("model")), fw_dir / str(meta.get("samples", {}).get("file"))
    for path in (model_path, samples_path):
        if not path.is_file():
            raise ZoEdgeError(f"{fw_dir} lacks {path.name}, which the export wrote; export the firmware again")
    data = model_path.read_bytes()
    if hashlib.sha256(data).hexdigest() != meta.get("model_sha256"):
        raise ZoEdgeError(f"{model_path} changed since the export; export the firmware again")
    graph = QGraph.from_bytes(data, source=str(model_path))
    x = np.load(samples_path, allow_pickle=False)
    if x.dtype != np.int8 or len(x) != meta["samples"].get("count"):
        raise ZoEdgeError(f"{samples_path} is not the {meta['samples'].get('count')} int8 samples the app embeds; "
                          "export the firmware again")
    return graph, x
