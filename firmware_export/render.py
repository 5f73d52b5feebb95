"""One jinja2 environment for every C template of the firmware export.

Templates live in ``firmware_export/templates``; Python passes plain values (numbers, lists, names)
and the templates do the looping, so no C is ever assembled by string concatenation. A missing value
is an export bug, hence StrictUndefined.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import jinja2

TEMPLATES_DIR = Path(__file__).parent / "templates"


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["hex32"] = lambda v: f"0x{int(v):08X}u"
    return env


def render(template: str, out_path, **values) -> Path:
    """Render ``template`` (a name in the templates folder) to ``out_path``; returns the path."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(environment().get_template(template).render(**values))
    return out_path
