"""Typed schema of a fedradval study protocol.

A protocol fixes every choice of a multi-centre study so that every hospital computes exactly the same
thing. All models forbid unknown keys (a typo must fail, not be ignored). Defaults are part of the
protocol id: the id is computed from the fully resolved protocol (see :mod:`protocols.identity`).
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

TEXTURE_AGGREGATIONS = ("3D_avg", "3D_comb", "2D_avg", "2D_comb", "2_5D_avg", "2_5D_comb")
FEATURE_FAMILIES = (
    "morphology",
    "local_intensity",
    "statistics",
    "intensity_histogram",
    "intensity_volume_histogram",
    "glcm",
    "glrlm",
    "glszm",
    "gldzm",
    "ngtdm",
    "ngldm",
)
REQUIRED_FAMILIES = (
    "morphology",
    "statistics",
    "intensity_histogram",
    "glcm",
    "glrlm",
    "glszm",
    "ngtdm",
    "ngldm",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Study(_Strict):
    """Who and what the study is."""

    name: str = Field(min_length=1, description="Short study name, shown in every command and in MLflow.")
    version: str = Field(default="1", min_length=1, description="Protocol version chosen by the coordinator.")
    description: str = Field(default="", description="Free text for humans; part of the protocol id.")


class Label(_Strict):
    """The reference standard: a manifest column with exactly two classes."""

    column: str = Field(min_length=1, description="Manifest / feature-table column holding the class.")
    positive: str = Field(min_length=1, description="Value of the positive class (e.g. malignant), as text.")
    negative: str = Field(min_length=1, description="Value of the negative class (e.g. benign), as text.")

    @model_validator(mode="after")
    def _distinct(self) -> "Label":
        if self.positive == self.negative:
            raise ValueError(f"positive and negative classes must differ, both are {self.positive!r}")
        return self

    def columns(self) -> list[str]:
        """The manifest columns that hold the outcome."""
        return [self.column]


TIME_UNITS = ("days", "weeks", "months", "years")
#: The two outcome forms of a study: the form of its label section, and the ``kind`` of a survival outcome.
BINARY, SURVIVAL = "binary", "survival"


class SurvivalLabel(_Strict):
    """The reference standard of a time-to-event study: follow-up time, event indicator and horizons t*."""

    type: Literal["survival"] = Field(description="Marks the survival form of label (the binary form has no type).")
    time_column: str = Field(min_length=1, description="Column with the follow-up time (event or censoring), >= 0.")
    event_column: str = Field(min_length=1, description="Column with the event indicator: 1 = event, 0 = censored.")
    time_unit: Literal["days", "weeks", "months", "years"] = Field(description="Unit of time_column and horizons.")
    horizons: list[float] = Field(
        min_length=1, description="Horizons t* (in time_unit, increasing) for risk, calibration, AUC, Brier, net benefit."
    )
    min_events_per_site: int = Field(
        default=10, ge=1, description="Per site; fewer events is an error at check time (Cox needs events, not cases)."
    )
    cox_ties: Literal["efron", "breslow"] = Field(default="efron", description="Handling of tied event times in Cox.")
    cox_ridge: float = Field(default=0.0, ge=0, description="Cox ridge penalty: maximise log partial likelihood - cox_ridge/2 * |beta|^2.")

    @field_validator("horizons")
    @classmethod
    def _increasing(cls, horizons: list[float]) -> list[float]:
        if any(not (h > 0 and h < float("inf")) for h in horizons):
            raise ValueError(f"horizons must be positive finite times, got {horizons}")
        if any(b <= a for a, b in zip(horizons, horizons[1:])):
            raise ValueError(f"horizons must be strictly increasing, got {horizons}")
        return horizons

    @model_validator(mode="after")
    def _distinct_columns(self) -> "SurvivalLabel":
        if self.time_column == self.event_column:
            raise ValueError(f"time_column and event_column must differ, both are {self.time_column!r}")
        return self

    def columns(self) -> list[str]:
        """The manifest columns that hold the outcome."""
        return [self.time_column, self.event_column]


def _label_form(value: object) -> str:
    """Binary unless the section says ``type: survival`` (the binary form keeps its fields, so its ids are unchanged)."""
    if isinstance(value, dict):
        return SURVIVAL if value.get("type") == SURVIVAL else BINARY
    return SURVIVAL if isinstance(value, SurvivalLabel) else BINARY


AnyLabel = Annotated[
    Union[Annotated[Label, Tag(BINARY)], Annotated[SurvivalLabel, Tag(SURVIVAL)]],
    Discriminator(_label_form),
]


def is_survival(protocol: "Protocol") -> bool:
    """True when the study's outcome is time to event."""
    return isinstance(protocol.label, SurvivalLabel)


class CategoricalCovariate(_Strict):
    """A categorical covariate preserved by ComBat; only these levels are accepted."""

    name: str = Field(min_length=1, description="Manifest column of the covariate.")
    levels: list[str] = Field(min_length=2, description="Allowed levels, as text; at least two.")

    @field_validator("levels")
    @classmethod
    def _unique(cls, levels: list[str]) -> list[str]:
        if len(set(levels)) != len(levels):
            raise ValueError(f"levels must be unique, got {levels}")
        return levels


class ContinuousCovariate(_Strict):
    """A continuous covariate preserved by ComBat; values outside [min, max] are implausible."""

    name: str = Field(min_length=1, description="Manifest column of the covariate.")
    min: float = Field(description="Lowest plausible value (inclusive).")
    max: float = Field(description="Highest plausible value (inclusive).")

    @model_validator(mode="after")
    def _ordered(self) -> "ContinuousCovariate":
        if not self.min < self.max:
            raise ValueError(f"min ({self.min}) must be below max ({self.max})")
        return self


class Covariates(_Strict):
    """Biological covariates to preserve in harmonisation (never the outcome)."""

    categorical: list[CategoricalCovariate] = Field(default_factory=list)
    continuous: list[ContinuousCovariate] = Field(default_factory=list)

    def names(self) -> list[str]:
        return [c.name for c in self.categorical] + [c.name for c in self.continuous]


class Batch(_Strict):
    """What a ComBat batch is: the site, or a manifest column such as the scanner model."""

    by: Literal["site", "column"] = Field(default="site", description="site = one batch per hospital; column = a manifest column.")
    column: str | None = Field(default=None, description="Manifest column holding the batch when by=column.")

    @model_validator(mode="after")
    def _column_given(self) -> "Batch":
        if self.by == "column" and not self.column:
            raise ValueError("batch.column is required when batch.by is 'column'")
        if self.by == "site" and self.column:
            raise ValueError("batch.column must be empty when batch.by is 'site'")
        return self


class Resampling(_Strict):
    """IBSI interpolation to an isotropic (or given) grid aligned on the image centre."""

    spacing: list[float] | None = Field(
        default=None, description="Target voxel spacing in mm (x, y, z); null = no resampling."
    )
    image_interpolator: Literal["nearest", "linear", "bspline"] = Field(
        default="linear", description="linear = trilinear, bspline = tricubic (IBSI configs C / E)."
    )
    mask_interpolator: Literal["nearest", "linear"] = Field(
        default="linear", description="Mask interpolation before the partial-volume threshold."
    )
    partial_volume_threshold: float = Field(
        default=0.5, gt=0, le=1, description="Interpolated mask voxels >= this fraction stay in the ROI."
    )
    round_intensities: bool = Field(default=False, description="Round interpolated intensities to integers.")
    in_plane_only: bool = Field(default=False, description="Resample x and y only (IBSI 2D configs).")

    @field_validator("spacing")
    @classmethod
    def _positive(cls, spacing: list[float] | None) -> list[float] | None:
        if spacing is not None and (len(spacing) != 3 or any(s <= 0 for s in spacing)):
            raise ValueError(f"spacing must be three positive numbers in mm, got {spacing}")
        return spacing


class Resegmentation(_Strict):
    """Re-segmentation of the intensity mask: range and/or outlier filter (both may apply)."""

    range: list[float | None] | None = Field(
        default=None, description="[lower, upper] intensity bounds; either may be null (open)."
    )
    outlier_sigma: float | None = Field(default=None, gt=0, description="Keep mean ± k·SD; null = off.")

    @field_validator("range")
    @classmethod
    def _pair(cls, bounds: list[float | None] | None) -> list[float | None] | None:
        if bounds is None:
            return None
        if len(bounds) != 2:
            raise ValueError(f"range must be [lower, upper], got {bounds}")
        lower, upper = bounds
        if lower is not None and upper is not None and not lower < upper:
            raise ValueError(f"range lower bound {lower} must be below upper bound {upper}")
        return bounds


class Discretisation(_Strict):
    """Grey-level discretisation for texture and intensity-histogram features."""

    method: Literal["fixed_bin_width", "fixed_bin_number", "none"] = Field(
        default="fixed_bin_width",
        description="Fixed bin size (counted from the re-segmentation lower bound) or fixed bin number; "
        "none = the intensities are the grey levels (integers >= 1, e.g. the IBSI digital phantom).",
    )
    bin_width: float = Field(default=25.0, gt=0, description="Used by fixed_bin_width.")
    bin_number: int = Field(default=32, ge=2, description="Used by fixed_bin_number.")


class IvhDiscretisation(_Strict):
    """Discretisation of the intensity-volume histogram (IBSI 3.5), separate from the texture one."""

    method: Literal["none", "fixed_bin_width", "fixed_bin_number"] = Field(
        default="none", description="none = every distinct intensity is a level (integer data such as CT HU)."
    )
    bin_width: float = Field(
        default=2.5, gt=0, description="Used by fixed_bin_width (bins start at the re-segmentation lower bound)."
    )
    bin_number: int = Field(default=1000, ge=2, description="Used by fixed_bin_number.")


class Extraction(_Strict):
    """Radiomic feature extraction settings (IBSI chapter 1)."""

    mode: Literal["ibsi", "pyradiomics"] = Field(
        default="ibsi", description="ibsi = our IBSI-conformant layer; pyradiomics = plain pyradiomics output."
    )
    dimensionality: Literal["3D", "2D"] = Field(default="3D", description="2D = slice-wise (IBSI configs A/B).")
    resampling: Resampling = Field(default_factory=Resampling)
    resegmentation: Resegmentation = Field(default_factory=Resegmentation)
    discretisation: Discretisation = Field(default_factory=Discretisation)
    ivh_discretisation: IvhDiscretisation = Field(
        default_factory=IvhDiscretisation, description="Intensity-volume histogram discretisation (IBSI 3.5)."
    )
    families: list[str] = Field(
        default_factory=lambda: list(REQUIRED_FAMILIES), description="Feature families to compute."
    )
    texture_aggregation: list[str] = Field(
        default_factory=lambda: ["3D_avg", "3D_comb"], description="IBSI texture aggregation modes (suffix of the names)."
    )
    crop_margin_voxels: int = Field(default=2, ge=0, description="Margin kept around the mask bounding box.")
    max_voxels: int = Field(
        default=60_000_000, gt=0, description="Refuse images larger than this (bounded memory per worker)."
    )
    pyradiomics_settings: dict[str, float | int | str | bool] = Field(
        default_factory=dict, description="Extra pyradiomics settings (pyradiomics mode only)."
    )

    @field_validator("families")
    @classmethod
    def _known_families(cls, families: list[str]) -> list[str]:
        unknown = sorted(set(families) - set(FEATURE_FAMILIES))
        if unknown:
            raise ValueError(f"unknown feature families {unknown}; allowed: {', '.join(FEATURE_FAMILIES)}")
        if not families:
            raise ValueError("at least one feature family is required")
        return families

    @field_validator("texture_aggregation")
    @classmethod
    def _known_aggregations(cls, modes: list[str]) -> list[str]:
        unknown = sorted(set(modes) - set(TEXTURE_AGGREGATIONS))
        if unknown:
            raise ValueError(f"unknown texture aggregations {unknown}; allowed: {', '.join(TEXTURE_AGGREGATIONS)}")
        if not modes:
            raise ValueError("at least one texture aggregation is required")
        return modes


class Harmonisation(_Strict):
    """Federated ComBat settings."""

    combat: bool = Field(default=True, description="Harmonise features with federated ComBat before training.")
    eb: bool = Field(default=True, description="Empirical-Bayes shrinkage of the batch effects.")
    parametric: bool = Field(default=True, description="Parametric (true) or non-parametric (false) EB priors.")
    mean_only: bool = Field(default=False, description="Correct location only, not scale.")
    reference_batch: str | None = Field(
        default=None,
        description="M-ComBat: batch left unchanged. Not for a leave-one-site-out study: the fold holding out this batch's site has no reference to map onto (the study fails naming that fold).")
    nan_policy: Literal["error", "drop_case"] = Field(
        default="error", description="What to do with a case that has a missing feature value."
    )
    min_batch_size: int = Field(default=2, ge=2, description="Smaller batches are an error.")
    warn_batch_size: int = Field(default=20, ge=2, description="Smaller batches get a warning.")


class Model(_Strict):
    """The classifier trained federatedly on harmonised features."""

    type: Literal["logistic", "linear_svm", "mlp"] = Field(default="logistic", description="Classifier family.")
    features: list[str] | None = Field(default=None, description="Feature columns to use; null = all extracted.")
    hidden_sizes: list[int] = Field(default_factory=lambda: [16], description="MLP hidden layer sizes.")
    optimiser: Literal["sgd", "adam"] = Field(default="sgd", description="Local optimiser at each site.")
    learning_rate: float = Field(default=0.05, gt=0, description="Local optimiser step size.")
    weight_decay: float = Field(default=0.0, ge=0, description="L2 penalty of the local optimiser.")
    batch_size: int = Field(default=32, ge=1, description="Local mini-batch size.")
    local_epochs: int = Field(default=1, ge=1, description="Passes over the local training part per round.")
    rounds: int = Field(default=20, ge=1, description="Federated training rounds.")
    aggregation: Literal["fedavg", "fedprox"] = Field(default="fedavg", description="Server aggregation rule.")
    proximal_mu: float = Field(default=0.0, ge=0, description="FedProx proximal term weight.")
    seed: int = Field(default=42, description="Seed of initial weights, shuffling and splits.")

    @field_validator("hidden_sizes")
    @classmethod
    def _positive_sizes(cls, sizes: list[int]) -> list[int]:
        if any(s < 1 for s in sizes):
            raise ValueError(f"hidden sizes must be positive integers, got {sizes}")
        return sizes

    @model_validator(mode="after")
    def _prox_mu(self) -> "Model":
        if self.aggregation == "fedprox" and self.proximal_mu <= 0:
            raise ValueError("fedprox needs proximal_mu > 0")
        return self


class Validation(_Strict):
    """External validation design and reporting choices."""

    leave_one_site_out: bool = Field(default=True, description="Hold out each site in turn (internal-external validation).")
    external_sites: list[str] = Field(default_factory=list, description="Sites used only for validation.")
    calibration_fraction: float = Field(default=0.25, gt=0, lt=1, description="Share of training cases kept for calibration.")
    recalibration: Literal["platt", "temperature", "none"] = Field(
        default="platt", description="Recalibration fitted on the training sites' calibration parts."
    )
    conformal_alpha: float = Field(default=0.1, gt=0, lt=1, description="Conformal miscoverage level (0.1 = 90 % sets).")
    conformal_method: Literal["histogram", "dp_quantile"] = Field(
        default="histogram",
        description="How the training sites' calibration scores give the conformal thresholds: k-merged score "
                    "histograms, or an ε-differentially private histogram on a fixed grid (docs/privacy.md).")
    conformal_epsilon: float = Field(
        default=4.0, ge=0.01, le=64,
        description="dp_quantile: ε of one site's release for one model (both classes; a patient is in one class).")
    conformal_delta: float = Field(
        default=0.005, gt=0, lt=0.5,
        description="dp_quantile: probability that the noise pushes a threshold below the exact one; the rank is "
                    "taken at α − δ so coverage stays ≥ 1 − α. Must be below conformal_alpha.")
    conformal_dp_bins: int = Field(
        default=40, ge=2, le=1000, description="dp_quantile: equal-width bins of the fixed score grid on [0, 1].")
    decision_threshold: float = Field(default=0.5, gt=0, lt=1, description="Probability threshold for Se/Sp/PPV/NPV.")
    histogram_bins: int = Field(default=50, ge=2, description="Score histogram bins for federated AUC.")
    reliability_bins: int = Field(default=10, ge=2, description="Equal-width bins of the reliability diagram and ECE.")
    decision_curve_thresholds: list[float] = Field(
        default_factory=lambda: [round(0.05 * i, 2) for i in range(1, 16)],
        description="Threshold probabilities of the decision curve.",
    )
    volume_feature: str = Field(default="morph_volume", description="Feature of the volume-only baseline.")
    min_cases_per_class: int = Field(default=5, ge=1, description="Per site; fewer is an error at check time.")

    @model_validator(mode="after")
    def _some_design(self) -> "Validation":
        if not self.leave_one_site_out and not self.external_sites:
            raise ValueError("choose leave_one_site_out and/or at least one external site")
        if any(not 0 < t < 1 for t in self.decision_curve_thresholds):
            raise ValueError("decision_curve_thresholds must lie strictly between 0 and 1")
        if self.conformal_method == "dp_quantile" and not self.conformal_delta < self.conformal_alpha:
            raise ValueError(f"conformal_delta ({self.conformal_delta}) must be below conformal_alpha "
                             f"({self.conformal_alpha}): the rank is taken at alpha - delta")
        return self


class Federation(_Strict):
    """How the coordinator runs rounds."""

    min_sites: int = Field(default=3, ge=2, description="The study fails when fewer sites remain.")
    round_timeout_s: float = Field(default=600.0, gt=0, description="Seconds to wait for the sites' replies in one round.")


class Privacy(_Strict):
    """Disclosure control and the site's query budget (docs/privacy.md derives what these bounds allow).

    No aggregate cell from fewer than k patients leaves a site; every request beyond a budget below is refused
    by the site before its data is touched, logged there, and answered with a generic refusal.
    """

    min_cell_count: int = Field(default=5, ge=1, description="k: smallest patient count any released cell may hold.")
    studies_per_approval: int = Field(
        default=1, ge=1,
        description="Studies (Flower runs) one `site-client approve` allows; `approve --runs N` sets another number.")
    max_sites: int = Field(
        default=12, ge=2,
        description="Most sites a study may have: bounds the folds, hence the models a site trains or evaluates in one run.")
    recalibration_rounds: int = Field(
        default=12, ge=0, description="Recalibration (Newton) rounds a site answers per run, after the first calibration message.")
    candidate_points: int = Field(
        default=10, ge=1, description="Recalibration candidate points a site evaluates per model and round.")
    evaluations_per_model: int = Field(
        default=1, ge=1,
        description="Times a site evaluates one model per run in each of the phases calibrate (first message) and evaluate.")
    max_steepness: float = Field(
        default=100.0, gt=0,
        description="Largest change of a model's logit per SD of the site's own data (weights × standardisation) a site accepts.")
    platt_bound: float = Field(
        default=25.0, gt=0,
        description="Platt parameters (a, b) a site evaluates or applies lie in [-bound, bound]² (bounds the steepness of recalibration).")
    max_abs_log_temperature: float = Field(
        default=10.0, gt=0, description="Temperature scaling parameters a site evaluates or applies: |log T| at most this.")


class Tracking(_Strict):
    """MLflow destination chosen by the coordinator."""

    experiment: str = Field(default="fedradval", description="MLflow experiment of the study's runs.")
    registered_model: str = Field(default="fedradval-model", description="Registry name of the final model.")
    model_alias: str = Field(default="champion", description="Registry alias set on the final model.")


class Protocol(_Strict):
    """A complete study protocol."""

    study: Study
    label: AnyLabel = Field(description="The reference standard: binary classes, or time to event (type: survival).")
    covariates: Covariates = Field(default_factory=Covariates)
    batch: Batch = Field(default_factory=Batch)
    extraction: Extraction = Field(default_factory=Extraction)
    harmonisation: Harmonisation = Field(default_factory=Harmonisation)
    model: Model = Field(default_factory=Model)
    validation: Validation = Field(default_factory=Validation)
    federation: Federation = Field(default_factory=Federation)
    privacy: Privacy = Field(default_factory=Privacy)
    tracking: Tracking = Field(default_factory=Tracking)

    @model_validator(mode="after")
    def _no_label_covariate(self) -> "Protocol":
        for column in self.label.columns():
            if column in self.covariates.names():
                raise ValueError(f"the label column {column!r} must not be a covariate (it is the outcome)")
        names = self.covariates.names()
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"covariate names must be unique, repeated: {dupes}")
        return self
