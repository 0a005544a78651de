"""Errors raised while reading a case: each names the file and what was expected."""

from __future__ import annotations


class CaseInputError(ValueError):
    """A case's image or mask cannot be used; the message says which file and why."""
