"""Shared by the reproduction scripts: machine description and README blocks."""

from __future__ import annotations

import re
from pathlib import Path

from calocoffea.machine import describe

README = Path(__file__).resolve().parents[1] / "README.md"


def machine() -> str:
    """CPU model, cores, system and Python version of this machine."""
    return describe()


def write_block(name: str, text: str) -> None:
    """Put ``text`` between the README markers ``<!-- reproduce:NAME:begin/end -->``."""
    begin, end = f"<!-- reproduce:{name}:begin -->", f"<!-- reproduce:{name}:end -->"
    if not README.exists():
        return
    readme = README.read_text()
    block = f"{begin}\n{text}\n{end}"
    if begin in readme:
        readme = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, readme,
                        flags=re.S)  # fmt: skip
    else:
        readme += "\n" + block + "\n"
    README.write_text(readme)
