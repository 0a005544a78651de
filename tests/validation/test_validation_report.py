"""The report is written from what MLflow holds, is self-contained, and is attached to the parent run."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.deployment


def test_report_html_and_markdown_from_mlflow(mlflow_server, logged_real_study, study_result, tmp_path):
    from mlflow import MlflowClient

    from coordinator.report import write_report

    study, _ = study_result
    html_path, md_path = write_report(logged_real_study.parent_run_id, tmp_path / "rep", mlflow_server)
    html = html_path.read_text()
    md = md_path.read_text()
    # self-contained: every image inline, no external references
    imgs = re.findall(r"<img [^>]*src='([^']+)'", html)
    assert len(imgs) >= 10 and all(src.startswith("data:image/png;base64,") for src in imgs)
    assert "http://" not in html and "https://" not in html
    for heading in ("Participants per site", "Discrimination", "Calibration", "decision curve", "Heterogeneity",
                    "recalibration before/after", "conformal prediction sets", "Is it just volume", "Limitations"):
        assert heading.lower() in md.lower(), heading
    assert "conformal guarantee does not cover a new site" in md
    assert f"{study.folds[0].before.auc.auc:.3f}" in md  # numbers come from the logged run
    assert f"{study.meta['auc'].estimate:.3f}" in md
    arts = {a.path for a in MlflowClient(tracking_uri=mlflow_server).list_artifacts(logged_real_study.parent_run_id, "report")}
    assert arts == {"report/report.html", "report/report.md"}


def test_report_refuses_a_child_run_and_unknown_ids(mlflow_server, logged_real_study, tmp_path):
    from coordinator.report import write_report

    fold_id = next(iter(logged_real_study.fold_run_ids.values()))
    with pytest.raises(ValueError, match="is a child run .* pass the study's parent run id"):
        write_report(fold_id, tmp_path, mlflow_server)
    with pytest.raises(ValueError, match="run '0123456789abcdef0123456789abcdef' not found"):
        write_report("0123456789abcdef0123456789abcdef", tmp_path, mlflow_server)
