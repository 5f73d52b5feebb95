"""What is inside an int8 .tflite, so that a user can choose where adapters go and which op is the classifier.

``inspect_model(bytes)`` returns a JSON-ready dict: the ops (index, type, inputs, outputs), the tensors
(index, short name, full name, shape, dtype, scale and zero point, constant or activation), the
activations that can take an adapter (``zo_edge.surgery.why_not_adapter``: int8, per-tensor quantised,
2-D [1, D] or 4-D [1, H, W, C], computed by an op, read by one; and before the default classifier's input),
the FULLY_CONNECTED ops that could be the classifier, and the ops the engine cannot run.
``format_inspection`` prints it as three aligned tables and a summary (``zo-edge inspect``).
"""

from __future__ import annotations

from zo_edge.surgery import adapter_candidates, classifier_candidates
from zo_edge.tflite_edit import TfliteModel


def inspect_model(model_bytes: bytes, source: str = "the model") -> dict:
    from zo_edge.kernels import KERNELS
    from zo_edge.qgraph import QGraph

    QGraph.from_bytes(model_bytes, source=source)  # the same checks as every other reader: one line if it is unusable
    model = TfliteModel.from_bytes(model_bytes, source, hint="pass an int8 .tflite model")
    classifiers = classifier_candidates(model)
    usable = [c for c in classifiers if c["problem"] is None]
    default = usable[-1] if usable and classifiers[-1] is usable[-1] else None
    adapters = adapter_candidates(model, before=default["input"] if default else None)
    tensors = []
    for t in range(len(model.tensors)):
        q = model.quant(t)
        tensors.append({
            "index": t, "short_name": model.short_name(t), "name": model.name(t), "shape": model.shape(t),
            "dtype": model.dtype_name(t),
            "kind": "constant" if model.is_const(t) else "input" if t in model.inputs else
                    "output" if t in model.outputs else "activation",
            "scales": [] if q is None else [float(s) for s in q[0]],
            "zero_points": [] if q is None else [int(z) for z in q[1]],
            "adapter": adapters.get(t),
        })
    ops = [{"index": k, "type": op.name, "inputs": op.inputs, "outputs": op.outputs} for k, op in enumerate(model.ops)]
    return {
        "source": source, "inputs": model.inputs, "outputs": model.outputs, "ops": ops, "tensors": tensors,
        "adapter_candidates": [{"tensor": t, "kind": kind, "short_name": model.short_name(t), "shape": model.shape(t)}
                               for t, kind in adapters.items()],
        "classifier_candidates": [{**c, "default": c is default, "shape": model.shape(c["weights"])}
                                  for c in classifiers],
        "unsupported_ops": sorted({op.name for op in model.ops} - set(KERNELS)),
    }


def _table(header, rows) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]


def _quant(row) -> tuple[str, str]:
    scales, zps = row["scales"], row["zero_points"]
    if not scales:
        return "-", "-"
    if len(scales) == 1:
        return f"{scales[0]:.4g}", str(zps[0])
    zp = str(zps[0]) if len(set(zps)) == 1 else f"{min(zps)}..{max(zps)}"
    return f"{min(scales):.3g}..{max(scales):.3g} (x{len(scales)})", zp


def format_inspection(info: dict, name_width: int = 60) -> str:
    out = [f"{info['source']}: {len(info['ops'])} ops, {len(info['tensors'])} tensors, input {info['inputs']}, "
           f"output {info['outputs']}", "", "ops"]
    out += _table(["op", "type", "inputs", "outputs"],
                  [[str(o["index"]), o["type"], " ".join(map(str, o["inputs"])), " ".join(map(str, o["outputs"]))]
                   for o in info["ops"]])
    out += ["", "tensors (adapter: can take one, as a 1x1 CONV_2D or a FULLY_CONNECTED bottleneck)"]
    rows = []
    for t in info["tensors"]:
        scale, zp = _quant(t)
        name = t["short_name"] if len(t["short_name"]) <= name_width else t["short_name"][: name_width - 3] + "..."
        rows.append([str(t["index"]), t["kind"], t["dtype"], "x".join(map(str, t["shape"])) or "scalar", scale, zp,
                     t["adapter"] or "", name])
    out += _table(["idx", "kind", "dtype", "shape", "scale", "zero point", "adapter", "name"], rows)
    out += ["", "classifier candidates (FULLY_CONNECTED)"]
    crows = []
    for c in info["classifier_candidates"]:
        then = f"SOFTMAX op {c['softmax']} -> {c['output']}" if c["softmax"] is not None else "-"
        crows.append([str(c["op"]), f"{c['shape'][1]} -> {c['shape'][0]}", f"{c['input']} -> {c['logits']}", then,
                      "default" if c["default"] else (c["problem"] or "")])
    out += _table(["op", "features -> classes", "tensors", "then", "note"], crows) if crows else ["  none"]
    out.append("")
    default = [c for c in info["classifier_candidates"] if c["default"]]
    cands = info["adapter_candidates"]
    if default:
        out.append(f"--classifier: default op {default[0]['op']} (its input, tensor {default[0]['input']}, is the "
                   "default adapter place)")
    else:
        out.append("--classifier: no default (the last FULLY_CONNECTED is not the graph's output, directly or through "
                   "one SOFTMAX)")
    out.append("--adapter-at: " + (", ".join(str(c["tensor"]) for c in cands) if cands else "no tensor can take one")
               + (" (by index or by name)" if cands else ""))
    if info["unsupported_ops"]:
        out.append(f"the int8 engine cannot run: {', '.join(info['unsupported_ops'])}")
    return "\n".join(out) + "\n"
