"""The claims study's arithmetic (benchmarks/claims.sh): the matched FO learning rate, the report and its plots.

    python benchmarks/claims.py matched-lr ZOFC_DIR FO_DIR     the lr that gives FO zo-fc's adapter step length
    python benchmarks/claims.py report OUT_DIR [--plots DIR]   markdown on stdout: table (mean +- 95 % CI) and claims

Every number comes from the results.json files under OUT_DIR/sim/<scenario>/<run>/. A 95 % confidence
interval is the mean +- t(0.975, n - 1) s / sqrt(n) over the n seeds (s: the sample standard deviation).
Claim (a) holds in a scenario when zo-fc's forgetting interval lies wholly below fo's (or the matched fo's)
while their average accuracies are within 2 points; the adapter's value, when zo-fc's average accuracy is
at least head's + 2 points.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
from scipy import stats

SCENARIOS = {
    "default": "spoken digits, class-il, one adapter beside the last block, dense head",
    "cosine": "the same with the reference's cosine classifier",
    "adapters3": "adapters beside blocks 0, 2 and 3",
    "domain-strong": "spoken digits, domain-il, strong shifts (noise, telephone band, reverberation, vocal tract)",
    "pretrained-other": "Japanese Vowels speakers, class-il, backbone pretrained on the spoken digits",
}
RUNS = ("zo-fc", "fo", "fo-matched", "zo", "head", "frozen")
METRICS = ("average_accuracy", "last_accuracy", "forgetting", "bwt")
MEASURES = ("update_norm_adapters", "drift_adapters", "drift_classifier", "loss_rise_l2", "loss_rise_linf",
            "loss_rise_symmetric_l2", "loss_rise_symmetric_linf")
ACCURACY_WINDOW = 2.0  # points: "comparable average accuracy"


def load(path) -> dict:
    path = Path(path)
    return json.loads((path / "results.json" if path.is_dir() else path).read_text())


def ci95(values) -> tuple[float, float]:
    """(mean, half-width of the 95 % t interval); half-width NaN for one value."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan")
    if len(v) == 1:
        return float(v[0]), float("nan")
    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))


def per_seed(results: dict, key: str) -> list[float]:
    if key in METRICS:
        return results["metrics"][key]["per_seed"]
    summary = (results.get("measurements") or {}).get("summary", {})
    return summary.get(key, {}).get("per_seed", [])


def matched_lr(zofc_dir, fo_dir) -> float:
    """fo's adapter lr times zo-fc's mean adapter step over fo's: SGD's step is proportional to its lr."""
    zofc, fo = load(zofc_dir), load(fo_dir)
    zo_step = np.mean(per_seed(zofc, "update_norm_adapters"))
    fo_step = np.mean(per_seed(fo, "update_norm_adapters"))
    if not (zo_step > 0 and fo_step > 0):
        raise SystemExit(f"no adapter steps measured in {zofc_dir} or {fo_dir}")
    return float(fo["settings"]["lr"]) * zo_step / fo_step


def collect(out: Path) -> dict:
    """{scenario: {run: results}} for every results.json under out/sim."""
    found = {}
    for scenario in SCENARIOS:
        for run in RUNS:
            path = out / "sim" / scenario / run / "results.json"
            if path.is_file():
                found.setdefault(scenario, {})[run] = load(path)
    return found


def _fmt(mean: float, half: float, digits: int = 1) -> str:
    if not math.isfinite(mean):
        return "–"
    return f"{mean:.{digits}f} ± {half:.{digits}f}" if math.isfinite(half) else f"{mean:.{digits}f}"


def _sci(mean: float, half: float) -> str:
    if not math.isfinite(mean):
        return "–"
    return f"{mean:.2e} ± {half:.1e}" if math.isfinite(half) else f"{mean:.2e}"


def table(found: dict) -> str:
    lines = ["| scenario | run | seeds | avg acc | last acc | forgetting | BWT | adapter step | adapter drift "
             "| loss rise L2 (sym.) | loss rise L∞ (sym.) | loss rise L∞ (one-sided) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for scenario, runs in found.items():
        for name in RUNS:
            if name not in runs:
                continue
            r = runs[name]
            cells = [_fmt(*ci95(per_seed(r, m))) for m in METRICS]
            measures = [_sci(*ci95(per_seed(r, m))) for m in ("update_norm_adapters", "drift_adapters",
                                                             "loss_rise_symmetric_l2", "loss_rise_symmetric_linf",
                                                             "loss_rise_linf")]
            label = name if name != "fo-matched" else f"fo-matched (lr {r['settings']['lr']:.3g})"
            lines.append(f"| {scenario} | {label} | {len(r['seeds'])} | " + " | ".join(cells + measures) + " |")
    return "\n".join(lines)


def claims(found: dict) -> str:
    """One line per scenario per claim, from the intervals (module docstring)."""
    out = []
    for scenario, runs in found.items():
        if "zo-fc" not in runs:
            continue
        z = runs["zo-fc"]
        zf, zf_h = ci95(per_seed(z, "forgetting"))
        za, _ = ci95(per_seed(z, "average_accuracy"))
        for other in ("fo", "fo-matched"):
            if other not in runs:
                continue
            of, of_h = ci95(per_seed(runs[other], "forgetting"))
            oa, _ = ci95(per_seed(runs[other], "average_accuracy"))
            separated = zf + zf_h < of - of_h
            comparable = abs(za - oa) <= ACCURACY_WINDOW
            verdict = "holds" if separated and comparable else "does not hold"
            why = [] if separated else ["forgetting intervals overlap or zo-fc forgets more"]
            if not comparable:
                why.append(f"average accuracies differ by {abs(za - oa):.1f} points")
            out.append(f"- {scenario}, claim (a) vs {other}: {verdict} — zo-fc forgets {zf:.1f} ± {zf_h:.1f} at "
                       f"{za:.1f} %, {other} {of:.1f} ± {of_h:.1f} at {oa:.1f} %" + (f" ({'; '.join(why)})" if why else ""))
        if "head" in runs:
            ha, ha_h = ci95(per_seed(runs["head"], "average_accuracy"))
            gain = za - ha
            out.append(f"- {scenario}, the ZO adapter's value: zo-fc {za:.1f} % vs head {ha:.1f} ± {ha_h:.1f} % "
                       f"({gain:+.1f} points; {'at least' if gain >= 2 else 'less than'} 2)")
    return "\n".join(out)


def plot(found: dict, out_dir: Path) -> list[Path]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    scenarios = list(found)
    fig = Figure(figsize=(4.2 * len(scenarios), 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    for k, scenario in enumerate(scenarios):
        ax = fig.add_subplot(1, len(scenarios), k + 1)
        for name, r in found[scenario].items():
            fm, fh = ci95(per_seed(r, "forgetting"))
            am, ah = ci95(per_seed(r, "average_accuracy"))
            ax.errorbar(fm, am, xerr=0 if not math.isfinite(fh) else fh, yerr=0 if not math.isfinite(ah) else ah,
                        fmt="o", capsize=3, label=name)
            ax.annotate(name, (fm, am), textcoords="offset points", xytext=(5, 5), fontsize=7)
        ax.set_title(scenario, fontsize=9)
        ax.set_xlabel("forgetting (points)")
        ax.set_ylabel("average accuracy (%)")
        ax.grid(alpha=0.3)
        ax.margins(0.25)
    fig.suptitle("Forgetting vs average accuracy, int8, mean ± 95 % CI over seeds")
    paths.append(out_dir / "forgetting_vs_accuracy.png")
    fig.savefig(paths[-1], dpi=110)

    shown = ("update_norm_adapters", "drift_adapters", "loss_rise_symmetric_linf", "loss_rise_linf")
    titles = ("mean adapter step (L2)", "adapter drift per task (L2)", "loss rise, L∞ ball (antithetic)",
              "loss rise, L∞ ball (one-sided, the reference's)")
    fig = Figure(figsize=(4.2 * len(shown), 3.2 * len(scenarios)), layout="constrained")
    FigureCanvasAgg(fig)
    for row, scenario in enumerate(scenarios):
        names = [n for n in RUNS if n in found[scenario] and n != "frozen"]
        for col, (key, title) in enumerate(zip(shown, titles)):
            ax = fig.add_subplot(len(scenarios), len(shown), row * len(shown) + col + 1)
            means, halves = zip(*[ci95(per_seed(found[scenario][n], key)) for n in names]) if names else ((), ())
            ax.bar(range(len(names)), [m if math.isfinite(m) else 0 for m in means],
                   yerr=[h if math.isfinite(h) else 0 for h in halves], capsize=3)
            ax.set_xticks(range(len(names)), names, rotation=30, fontsize=7)
            ax.set_title(f"{scenario}: {title}", fontsize=8)
            ax.grid(alpha=0.3, axis="y")
            if key.startswith("update") or key.startswith("drift"):
                ax.set_yscale("log")
    paths.append(out_dir / "measurements.png")
    fig.savefig(paths[-1], dpi=100)
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("matched-lr")
    m.add_argument("zofc")
    m.add_argument("fo")
    r = sub.add_parser("report")
    r.add_argument("out", type=Path)
    r.add_argument("--plots", type=Path)
    args = parser.parse_args(argv)
    if args.command == "matched-lr":
        print(f"{matched_lr(args.zofc, args.fo):.6g}")
        return 0
    found = collect(args.out)
    if not found:
        print(f"no results under {args.out}/sim", file=sys.stderr)
        return 1
    print("## Claims study (int8)\n")
    print("\n".join(f"- **{s}**: {SCENARIOS[s]}" for s in found) + "\n")
    print(table(found) + "\n")
    print(claims(found))
    if args.plots:
        for path in plot(found, args.plots):
            print(f"\n![{path.stem}]({path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
