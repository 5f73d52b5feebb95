"""RAM and flash budgets against a device: what ``zo-edge profile`` computes, prints and plots.

The estimates come from ``zo_edge.memory.estimate`` (one Budget per configuration: inference only,
ZO-FC, first-order backprop through the adapter); this module sets them against a device from the
catalogue (``zo_edge.devices``): headroom, whether each configuration fits, and a verdict.
"""

from __future__ import annotations

from pathlib import Path

from zo_edge.devices import Device
from zo_edge.errors import ZoEdgeError

METHOD_CHOICES = ("zo-fc", "fo", "inference", "all")


def _configurations() -> tuple[str, ...]:
    from zo_edge.memory import CONFIGURATIONS

    return tuple(CONFIGURATIONS)


def resolve_methods(methods) -> list[str]:
    """'all', one configuration name, or a list of them -> the configurations, in catalogue order."""
    known = _configurations()
    if isinstance(methods, str):
        methods = [methods]
    methods = list(methods)
    if "all" in methods:
        return list(known)
    for m in methods:
        if m not in known:
            raise ZoEdgeError(f"unknown method {m!r} (--method); choose one of {', '.join(known)} or all")
    if not methods:
        raise ZoEdgeError(f"give at least one method (--method): {', '.join(known)} or all")
    return [c for c in known if c in methods]


def kib(n: float) -> str:
    """Bytes as KiB: whole numbers without decimals ('256 KiB'), the rest with one ('41.2 KiB')."""
    value = n / 1024
    if value == int(value):
        return f"{int(value)} KiB"
    return f"{value:.1f} KiB"


def _verdict(name: str, entry: dict, device: dict) -> str:
    key, sram, flash = device["key"], device["sram_bytes"], device["flash_bytes"]
    ram, fl = entry["ram_bytes"], entry["flash_bytes"]
    if entry["fits"]:
        return (f"{name} fits {key}: {kib(ram)} of {kib(sram)} SRAM ({kib(sram - ram)} headroom), "
                f"{kib(fl)} of {kib(flash)} flash ({kib(flash - fl)} headroom)")
    short = []
    if ram > sram:
        short.append(f"{kib(ram - sram)} more SRAM ({kib(ram)} of {kib(sram)})")
    if fl > flash:
        short.append(f"{kib(fl - flash)} more flash ({kib(fl)} of {kib(flash)})")
    return f"{name} does not fit {key}: needs {' and '.join(short)}"


def profile(run: dict, config, device: Device, methods="zo-fc", code_bytes: dict | None = None) -> dict:
    """Budgets of every configuration of the run's model, set against ``device``.

    Returns ``{"device", "run_dir", "learner", "selected", "configurations": {name: {configuration,
    ram_bytes, flash_bytes, components: {ram, flash}, notes, ram_headroom_bytes, flash_headroom_bytes,
    fits_ram, fits_flash, fits}}, "fits", "verdicts", "time"}`` (``timing``: a lower bound on the time per
    inference and per zo-fc step). ``fits`` and ``verdicts`` cover the selected
    ``methods`` ('all', one configuration or a list); every configuration is estimated either way, so the
    cost of training over inference is always there to compare.
    """
    from zo_edge.kernel_spec import CORE_ISA
    from zo_edge.memory import estimate

    selected = resolve_methods(methods)
    dev = device.to_json()
    isa = CORE_ISA[device.core]
    configurations = {}
    for name in _configurations():
        budget = estimate(run, config, name, code_bytes, isa=isa)
        entry = budget.to_json()
        ram, flash = int(budget.ram_bytes), int(budget.flash_bytes)
        entry.update({
            "ram_bytes": ram,
            "flash_bytes": flash,
            "ram_headroom_bytes": device.sram_bytes - ram,
            "flash_headroom_bytes": device.flash_bytes - flash,
            "fits_ram": ram <= device.sram_bytes,
            "fits_flash": flash <= device.flash_bytes,
        })
        entry["fits"] = entry["fits_ram"] and entry["fits_flash"]
        configurations[name] = entry
    verdicts = [_verdict(name, configurations[name], dev) for name in selected]
    return {
        "device": dev,
        "run_dir": run.run_dir,
        "model": {k: run.settings.get(k) for k in ("arch", "dataset", "adapter_position", "adapter_width")},
        "learner": config.to_json() if hasattr(config, "to_json") else dict(config),
        "selected": selected,
        "configurations": configurations,
        "fits": all(configurations[name]["fits"] for name in selected),
        "verdicts": verdicts,
        "time": timing(run, config, device),
    }


LOWER_BOUND = ("a lower bound: instructions / clock, at least one cycle per instruction (loads, multiplies and flash "
               "wait states take more on silicon)")


def pass_instructions(run, isa: str) -> dict:
    """Estimated instructions per sample of a whole inference, of the frozen prefix and of one suffix pass
    (split where the learners split), by the kernels' per-path costs on ``isa`` fitted to QEMU's exact
    counts (``zo_edge.kernel_spec.INSTRUCTIONS``)."""
    from zo_edge import kernel_spec, planner

    layers = kernel_spec.model_layers(run.graph)
    prefix_ops = planner.split_schedules(run.graph, run.plan.trainable_indices()).prefix_ops
    inference = kernel_spec.estimated_instructions(layers, isa)
    prefix = kernel_spec.estimated_instructions([(i, lay) for i, lay in layers if i in prefix_ops], isa)
    return {"inference": inference, "prefix": prefix, "suffix": inference - prefix}


def timing(run, config, device: Device) -> dict:
    """Time per inference and per zo-fc step on the device: instructions / clock_hz, a lower bound.

    Instructions are ``pass_instructions``; a step is B prefix passes and (2q+1)·B suffix passes (a
    measured step adds perturbing, the loss and the updates). ``attach_measured`` puts a firmware's exact
    counts in their place."""
    from zo_edge import kernel_spec

    isa = kernel_spec.CORE_ISA[device.core]
    per_pass = pass_instructions(run, isa)
    passes = (2 * config.q + 1) * config.batch_size
    step = config.batch_size * per_pass["prefix"] + passes * per_pass["suffix"]
    instructions = {"inference": int(per_pass["inference"]), "train_step": int(step)}
    return {"clock_hz": device.clock_hz, "isa": isa, "measured": False, "instructions": instructions,
            "seconds_at_least": _seconds(instructions, device.clock_hz), "lower_bound": LOWER_BOUND,
            "basis": f"estimated from the graph by the {isa} kernels' per-path costs fitted to QEMU counts "
                     f"(zo_edge.kernel_spec.INSTRUCTIONS); a zo-fc step as B = {config.batch_size} prefix and "
                     f"(2q+1)·B = {passes} suffix passes, without perturbing, the loss and the update"}


def _seconds(instructions: dict, clock_hz: int) -> dict:
    return {k: v / clock_hz for k, v in instructions.items()}


def format_time(time: dict) -> str:
    ins, sec = time["instructions"], time["seconds_at_least"]
    return (f"time at {time['clock_hz'] / 1e6:g} MHz, a lower bound (instructions / clock): inference "
            f"{ins['inference']:,} instructions >= {1e3 * sec['inference']:.2f} ms, zo-fc step {ins['train_step']:,} "
            f">= {1e3 * sec['train_step']:.1f} ms\n  instructions {time['basis']}")


def _components(result: dict, memory: str) -> list[str]:
    """Component names in first-seen order over the configurations."""
    names: list[str] = []
    for entry in result["configurations"].values():
        for name in entry["components"][memory]:
            if name not in names:
                names.append(name)
    return names


def format_profile(result: dict) -> str:
    """The budget as text: a table per component with the configurations side by side (KiB), totals,
    the device's capacity, headroom, fits, then one verdict line per selected configuration and the notes."""
    dev = result["device"]
    configs = list(result["configurations"])
    selected = set(result["selected"])
    head = [c + ("*" if c in selected and len(selected) < len(configs) else "") for c in configs]
    rows: list[tuple[str, list[str]]] = []

    def value(n) -> str:
        if n is None:
            return "-"
        return "<0.1" if 0 < n < 0.05 * 1024 else f"{n / 1024:.1f}"

    for memory, total_key, capacity, label in (("ram", "ram_bytes", dev["sram_bytes"], "SRAM"),
                                               ("flash", "flash_bytes", dev["flash_bytes"], "flash")):
        rows.append((f"{'RAM' if memory == 'ram' else 'flash'} (KiB)", [""] * len(configs)))
        for comp in _components(result, memory):
            rows.append((f"  {comp}", [value(result["configurations"][c]["components"][memory].get(comp))
                                       for c in configs]))
        totals = [result["configurations"][c][total_key] for c in configs]
        rows.append(("  total", [value(t) for t in totals]))
        rows.append((f"  device {label}", [value(capacity)] * len(configs)))
        rows.append(("  headroom", [value(capacity - t) for t in totals]))
        rows.append(("", [""] * len(configs)))
    rows.append(("fits", ["yes" if result["configurations"][c]["fits"] else "NO" for c in configs]))

    width0 = max(len(r[0]) for r in rows)
    widths = [max(len(h), *(len(r[1][i]) for r in rows)) for i, h in enumerate(head)]
    lines = []
    model = result.get("model") or {}
    what = ", ".join(str(model[k]) for k in ("arch", "dataset") if model.get(k))
    run_dir = result.get("run_dir") or "run"
    lines.append(f"{run_dir}{f' ({what})' if what else ''} on {_describe(dev)}")
    lines.append(f"  figures: {dev['source']}")
    if dev.get("sram_note"):
        lines.append(f"  SRAM counted: {dev['sram_note']}")
    learner = result.get("learner") or {}
    if learner:
        lines.append("learner: " + ", ".join(f"{k} {learner[k]}" for k in ("mode", "batch_size", "q", "master", "momentum")
                                             if k in learner))
    lines.append("")
    lines.append(" " * width0 + "  " + "  ".join(h.rjust(w) for h, w in zip(head, widths)))
    for label, cells in rows:
        lines.append((label.ljust(width0) + "  " + "  ".join(c.rjust(w) for c, w in zip(cells, widths))).rstrip())
    if "*" in "".join(head):
        lines.append("(* the configuration(s) --method selected)")
    lines.append("")
    lines.extend(result["verdicts"])
    if result.get("time"):
        lines.append(format_time(result["time"]))
    notes = {}
    for c in configs:
        for k, v in (result["configurations"][c].get("notes") or {}).items():
            notes.setdefault(k, v)
    if notes:
        lines.append("")
        lines.append("notes:")
        lines.extend(f"  {k}: {v}" for k, v in notes.items())
    return "\n".join(lines)


def _describe(dev: dict) -> str:
    fpu = "with FPU" if dev["fpu"] else "no FPU"
    mhz = dev["clock_hz"] / 1e6
    return (f"{dev['key']} ({dev['name']}): {dev['core']} {fpu}, {mhz:g} MHz, "
            f"{kib(dev['sram_bytes'])} SRAM, {kib(dev['flash_bytes'])} flash")


def attach_measured(result: dict, measured: dict) -> dict:
    """Put a measured firmware (``firmware_export.measure.measure_firmware``) beside the zo-fc estimate:
    ``result["measured"]`` gains ``estimate`` and ``estimate_error`` (estimate / measured - 1). When the board's
    kernels are the device's (the same instruction set), its exact instruction counts replace the estimated
    ones in ``result["time"]`` (``measured`` true; the estimate kept as ``estimated_instructions``)."""
    estimate = result["configurations"]["zo-fc"]
    measured = dict(measured)
    measured["estimate"] = {"ram_bytes": estimate["ram_bytes"], "flash_bytes": estimate["flash_bytes"]}
    counts = measured.get("instructions") or {}
    time = result.get("time")
    if counts.get("inference") and time and measured.get("isa") == time["isa"]:  # exact counts replace the estimate
        time["estimated_instructions"] = time["instructions"]
        time["instructions"] = {k: int(counts.get(k) or time["instructions"][k]) for k in ("inference", "train_step")}
        time["seconds_at_least"] = _seconds(time["instructions"], time["clock_hz"])
        time["measured"] = True
        time["basis"] = (f"measured exactly on {measured['board']} in QEMU (-icount), the --firmware folder's batch "
                         "and q, with the kernels of that board's core")
    measured["estimate_error"] = {k: round(estimate[k] / measured[k] - 1, 4) for k in ("ram_bytes", "flash_bytes")}
    result["measured"] = measured
    return result


def format_measured(measured: dict) -> str:
    e = measured["estimate_error"]
    return (f"measured on {measured['board']} (zo-edge library as linked, stack painted and scanned): "
            f"RAM {measured['ram_bytes']:,} B = static {measured['library']['ram_static_bytes']:,} + stack "
            f"{measured['stack_high_water_bytes']:,}; flash {measured['flash_bytes']:,} B. zo-fc estimate "
            f"{measured['estimate']['ram_bytes']:,} B RAM ({e['ram_bytes']:+.1%}), "
            f"{measured['estimate']['flash_bytes']:,} B flash ({e['flash_bytes']:+.1%})")


def plot_profile(result: dict, path) -> Path:
    """Two panels (RAM, flash): a stacked bar of components per configuration, with the device's SRAM and
    flash as horizontal lines. Saved as PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    dev = result["device"]
    configs = list(result["configurations"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2))
    cmap = plt.get_cmap("tab20")
    palette = [cmap(i) for i in (*range(0, 20, 2), *range(1, 20, 2))]  # the ten strong colours, then the light ones
    for ax, memory, capacity, label in ((axes[0], "ram", dev["sram_bytes"], "SRAM"),
                                        (axes[1], "flash", dev["flash_bytes"], "flash")):
        comps = _components(result, memory)
        bottoms = [0.0] * len(configs)
        for i, comp in enumerate(comps):
            heights = [result["configurations"][c]["components"][memory].get(comp, 0) / 1024 for c in configs]
            ax.bar(configs, heights, bottom=bottoms, color=palette[i % len(palette)], label=comp, edgecolor="white", linewidth=0.5)
            bottoms = [b + h for b, h in zip(bottoms, heights)]
        for x, (c, total) in enumerate(zip(configs, bottoms)):
            fits = result["configurations"][c]["fits_ram" if memory == "ram" else "fits_flash"]
            ax.annotate(f"{total:.1f}", (x, total), ha="center", va="bottom", fontsize=8,
                        color="black" if fits else "red")
        ax.axhline(capacity / 1024, color="red", linestyle="--", linewidth=1.2)
        ax.text(len(configs) - 0.5, capacity / 1024, f"{dev['key']} {label} {kib(capacity)}", ha="right",
                va="bottom", fontsize=8, color="red")
        ax.set_ylim(0, max(capacity / 1024, max(bottoms, default=0)) * 1.12)
        ax.set_ylabel(f"{'RAM' if memory == 'ram' else 'flash'} (KiB)")
        ax.set_title(f"{'RAM' if memory == 'ram' else 'flash'} by component")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2, frameon=False)
    fig.suptitle(f"{result.get('run_dir') or 'run'} on {dev['key']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
