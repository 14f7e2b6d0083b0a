"""Helpers for the robustness probes: snapshot folders, check one-line errors."""

from __future__ import annotations

from pathlib import Path

Snapshot = dict[str, tuple[int, int]]


def snapshot(root: Path) -> Snapshot:
    """Every file under ``root``: relative path -> (size, mtime_ns). Equal snapshots: nothing changed."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def one_error(lines: list[str], *needles: str) -> str:
    """Assert exactly one ERROR line, naming every needle, with no traceback; return it."""
    assert len(lines) == 1, lines
    line = lines[0]
    for needle in needles:
        assert needle in line, (needle, line)
    assert "Traceback" not in line
    return line
