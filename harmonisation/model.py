"""Frozen training estimates of a federated ComBat run (what a held-out site needs).

Holds α̂ (p), B̂ (q x p; batch rows and covariate rows), σ̂² (p), the schema (batches,
categorical levels, continuous covariates, feature order, excluded features) and the
options.  No patient-level data and no per-batch γ*, δ* (those stay at the sites).
Serialises to a dict of arrays plus JSON-able metadata, or one ``.npz`` file.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .messages import Message
from .schema import ComBatOptions, plan_levels, plan_options

_ARRAYS = ("alpha", "beta", "var_pooled", "batch_n", "cont_mean", "cont_sd")


@dataclass(frozen=True)
class ComBatModel:
    features: list[str]
    batches: list[str]
    batch_n: np.ndarray
    categorical: list[str]
    levels: dict[str, list[str]]
    continuous: list[str]
    design_columns: list[str]
    options: ComBatOptions
    alpha: np.ndarray
    beta: np.ndarray
    var_pooled: np.ndarray
    cont_mean: np.ndarray
    cont_sd: np.ndarray
    batch_col: str | None = None
    excluded: dict[str, str] = field(default_factory=dict)
    condition_number: float = float("nan")

    @property
    def covariate_beta(self) -> np.ndarray:
        """Covariate rows of B̂ (design minus the batch columns) x features."""
        return self.beta[len(self.batches):]

    @classmethod
    def from_messages(cls, plan: Message, fit: Message, scale: Message) -> "ComBatModel":
        return cls(
            features=list(plan["features"]), batches=list(plan["batches"]),
            batch_n=np.asarray(plan["batch_n"]).copy(), categorical=list(plan["categorical"]),
            levels=plan_levels(plan), continuous=list(plan["continuous"]),
            design_columns=list(plan["design_columns"]), options=plan_options(plan),
            alpha=fit["alpha"].copy(), beta=fit["beta"].copy(), var_pooled=scale["var_pooled"].copy(),
            cont_mean=fit["cont_mean"].copy(), cont_sd=fit["cont_sd"].copy(),
            batch_col=plan["batch_col"] or None,
            excluded=dict(zip(plan["excluded"], plan["excluded_reason"])),
            condition_number=float(fit["cond"]),
        )

    def to_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        """(arrays, JSON-able metadata)."""
        arrays = {k: np.asarray(getattr(self, k)) for k in _ARRAYS}
        meta = {
            "format": "fedradval.combat_model/1",
            "features": self.features, "batches": self.batches, "categorical": self.categorical,
            "levels": self.levels, "continuous": self.continuous,
            "design_columns": self.design_columns, "options": asdict(self.options),
            "batch_col": self.batch_col, "excluded": self.excluded,
            "condition_number": self.condition_number,
        }
        return arrays, meta

    @classmethod
    def from_dict(cls, arrays: dict[str, np.ndarray], meta: dict) -> "ComBatModel":
        if meta.get("format") != "fedradval.combat_model/1":
            raise ValueError(f"not a ComBat model (format {meta.get('format')!r})")
        return cls(
            features=list(meta["features"]), batches=list(meta["batches"]),
            categorical=list(meta["categorical"]),
            levels={k: list(v) for k, v in meta["levels"].items()},
            continuous=list(meta["continuous"]), design_columns=list(meta["design_columns"]),
            options=ComBatOptions(**meta["options"]), batch_col=meta["batch_col"],
            excluded=dict(meta["excluded"]), condition_number=float(meta["condition_number"]),
            **{k: np.asarray(arrays[k]) for k in _ARRAYS},
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write one ``.npz`` (arrays + metadata JSON) atomically (temp file, then rename)."""
        path = Path(path)
        arrays, meta = self.to_dict()
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, __meta__=np.array(json.dumps(meta)), **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ComBatModel":
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["__meta__"]))
            arrays = {k: npz[k] for k in _ARRAYS}
        return cls.from_dict(arrays, meta)
