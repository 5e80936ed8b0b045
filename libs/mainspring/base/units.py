"""Human units: memory sizes like 512MiB, 2GiB, 1.5GB."""

from __future__ import annotations

import re

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
    "tb": 1000**4,
}
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_memory(text: str | int) -> int:
    """Bytes from '2GiB', '512MiB', '1.5GB' or a plain number of bytes."""
    if isinstance(text, int):
        return text
    match = _MEMORY.match(text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(f"memory {text!r} is not a size: write e.g. 512MiB or 2GiB")
    return int(float(match.group(1)) * _UNITS[unit])


def format_bytes(size: int | None) -> str:
    """2147483648 → '2.0GiB'."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f}{unit}" if unit != "B" else f"{int(value)}B"
        value /= 1024
    return f"{value:.1f}TiB"
