"""Errors a user sees as one line (the CLI prints them and exits 1); no heavy imports here."""

from __future__ import annotations

__all__ = ["PreprocessingError", "TrainingError"]


class PreprocessingError(RuntimeError):
    """A stage produced an implausible result for one subject (reported, subject skipped)."""


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss or weights); nothing is saved."""
