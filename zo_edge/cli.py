"""The ``zo-edge`` command line: one command per user job, listed in the order of the job.

Commands live with the package that does the work (``zo_edge.commands``, ``sim.cli``,
``firmware_export.cli``) and are imported only when used, so ``zo-edge --help`` stays quick.

Exit codes: 0 success; 1 a check found differences (``verify``, ``verify-firmware``); 2 a problem
with the input or the setup (one line on stderr, ``zo-edge: error: ...``, never a traceback — click's
own usage errors included); 3 ``profile``: the configuration does not fit the device; 130 interrupted.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from zo_edge.errors import ZoEdgeError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter is not our users' business

# name -> "module:attribute", in the order of the job: data, model, learning, firmware, budget
COMMANDS = {
    "data": "zo_edge.commands:data",
    "build": "zo_edge.commands:build",
    "inspect": "zo_edge.commands:inspect_cmd",
    "simulate": "sim.cli:simulate",
    "compare": "sim.cli:compare",
    "export": "firmware_export.cli:export_cmd",
    "verify-firmware": "firmware_export.cli:verify_firmware_cmd",
    "profile": "zo_edge.commands:profile_cmd",
    "sweep": "sim.cli:sweep",
    "demo": "zo_edge.commands:demo",
    "infer": "zo_edge.commands:infer",
    "verify": "zo_edge.commands:verify",
}


class ZoEdgeCLI(click.Group):
    """A group whose commands are loaded from ``COMMANDS`` on first use (click's examples/complex)."""

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attribute = target.split(":")
        return getattr(importlib.import_module(module), attribute)


@click.group(cls=ZoEdgeCLI, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="zo-edge")
def cli():
    """zo-edge: continual learning on Cortex-M with ZO-FC.

    Simulate on-device learning on the device's exact int8 arithmetic, export firmware that does the
    same, and profile RAM budgets. `zo-edge demo` runs it all on the bundled spoken digits.

    \b
    From nothing to firmware:
      zo-edge build --out runs/kws && zo-edge simulate runs/kws && zo-edge export runs/kws --out fw && zo-edge verify-firmware fw

    \b
    Exit codes: 0 ok; 1 a check found differing bytes; 2 bad input or setup (one line on stderr);
    3 profile: does not fit the device; 130 interrupted.
    Outputs never replace inputs; --force replaces only what zo-edge itself wrote.
    """


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _usage_hint(exc: click.ClickException) -> str:
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.UsageError) and ctx is not None:
        return f" (see `{ctx.command_path} --help`)"
    return ""


def main(argv=None) -> None:
    try:
        code = cli.main(args=argv, prog_name="zo-edge", standalone_mode=False)
    except ZoEdgeError as exc:
        click.echo(f"zo-edge: error: {_one_line(exc)}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("zo-edge: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:  # usage errors and bad parameters: one line, exit 2
        click.echo(f"zo-edge: error: {_one_line(exc.format_message())}{_usage_hint(exc)}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("zo-edge: interrupted; outputs are written whole or not at all, so nothing half-written is left",
                   err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
