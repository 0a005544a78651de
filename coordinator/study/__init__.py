"""Coordinator side of a study: pure orchestration over a Transport (no Flower, no MLflow).

``run_study`` runs handshake → federated ComBat → lockstep training of every leave-one-site-out fold and the
final model → recalibration / conformal → evaluation, and returns a :class:`StudyOutcome`.
"""

from coordinator.study.outcome import StudyOutcome
from coordinator.study.runner import run_study
from coordinator.study.transport import Session, SiteFailure, StudyFailed, Transport
from protocols.payload import Payload

__all__ = ["Payload", "Session", "SiteFailure", "StudyFailed", "StudyOutcome", "Transport", "run_study"]
