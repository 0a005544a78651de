"""IBSI-conformant radiomic feature extraction at a site.

Public API: :func:`extract_case` (one lesion -> ``{IBSI tag: value}``) and :func:`extract_cohort` (a manifest ->
feature table, in parallel, cached, atomic). The IBSI layer (resampling, re-segmentation, discretisation, feature
corrections and aggregation) sits on pyradiomics' C texture matrices; see docs/ibsi-conformance.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["extract_case", "extract_cohort", "ExtractionResult"]

if TYPE_CHECKING:
    from site_client.extraction.case import extract_case
    from site_client.extraction.runner import ExtractionResult, extract_cohort


def __getattr__(name: str) -> Any:
    """Lazy imports: ``import site_client.extraction`` stays cheap for commands that only need the names."""
    if name == "extract_case":
        from site_client.extraction.case import extract_case

        return extract_case
    if name in ("extract_cohort", "ExtractionResult"):
        from site_client.extraction import runner

        return getattr(runner, name)
    raise AttributeError(name)
