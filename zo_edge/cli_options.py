"""What the commands share: the learner options, typed parameters, JSON output and array inputs.

Each package defines its own commands (``zo_edge.commands``, ``sim.cli``, ``firmware_export.cli``);
``zo_edge.cli`` puts them on one lazily loaded group. Choices are ``click.Choice`` so that ``--help``
lists the values; ``zo_edge.cli.main`` turns click's usage errors into the one-line format.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from zo_edge.errors import ZoEdgeError

METHOD_CHOICE = click.Choice(["zo-fc", "fo", "zo", "head", "frozen"])
MODE_CHOICE = click.Choice(["int8", "float"])
MASTER_CHOICE = click.Choice(["int16", "int8"])


def echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2))


def load_npy(path, what: str):
    import numpy as np

    p = Path(path)
    if not p.exists():
        raise ZoEdgeError(f"{what} {p}: no such file")
    if p.is_dir():
        raise ZoEdgeError(f"{what} {p} is a folder; give a .npy file")
    try:
        return np.load(p, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - numpy raises many types for a bad file
        raise ZoEdgeError(f"{what} {p} is not a readable .npy array ({type(exc).__name__}); save one with "
                          "numpy.save") from None


def existing_folder(help_name: str = "RUN_DIR"):
    """A folder argument; a missing folder or a file gets click's one-line usage error."""
    return click.Path(exists=True, file_okay=False, dir_okay=True, path_type=Path)


def force_option(what: str):
    return click.option("--force", is_flag=True,
                        help=f"Replace an existing {what}, but only one zo-edge wrote (never an input, never "
                             "files you added).")


def learner_options(f):
    """The learner options simulate and export share (each may also come from --config)."""
    options = [
        click.option("--method", type=METHOD_CHOICE, default=None, help="What trains and how (default zo-fc)."),
        click.option("--mode", type=MODE_CHOICE, default=None,
                     help="int8 (default: the device's arithmetic) or float (the reference algorithm)."),
        click.option("--seed", type=int, default=None, help="Seed of the learner's randomness (default 0)."),
        click.option("--q", type=int, default=None, help="Queries (Rademacher directions) per step (default 4)."),
        click.option("--epsilon", type=float, default=None,
                     help="Perturbation size in float units (default: 1e-3 in float mode, one quantization step in int8)."),
        click.option("--lr", type=float, default=None, help="Adapter learning rate (default 0.01)."),
        click.option("--fc-lr", type=float, default=None, help="Classifier learning rate (default 0.05)."),
        click.option("--momentum", type=float, default=None, help="SGD momentum, 0 for none (default 0.9)."),
        click.option("--clip", type=float, default=None, help="Gradient-norm clip of the adapter gradient, 0 for none (default 1.0)."),
        click.option("--epochs", type=int, default=None, help="Epochs per task (default 10)."),
        click.option("--fc-epochs", type=int, default=None,
                     help="zo-fc: epochs the classifier trains before it freezes (default half the epochs, at least 1)."),
        click.option("--batch-size", type=int, default=None, help="Samples per step (default 48)."),
        click.option("--master", type=MASTER_CHOICE, default=None,
                     help="int8 mode: int16 (default) keeps a 16-bit master copy of int8 weights; int8 none."),
        click.option("--lr-schedule", type=click.Choice(["constant", "cosine"]), default=None,
                     help="Learning rates over a task's epochs: constant (default) or cosine decay, restarting each task."),
        click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="TOML file with any of these options; flags override it."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def progress_log(quiet: bool):
    """Where progress lines go: stderr, unless --quiet or --json."""
    return (lambda m: None) if quiet else (lambda m: click.echo(m, err=True))
