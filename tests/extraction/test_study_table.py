"""A study's extracted table follows the site's data between runs and stays fixed within one (issue 13, item 4).

A manifest site's handshake (the start of a run) goes through the product path (``site_client.study.handle``);
later messages load the cohort as the dispatcher does (``load_cohort``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from protocols import load_protocol, protocol_id
from site_client.study import SiteContext, handle
from site_client.study.cohort import load_cohort
from site_client.study.context import SiteStudyError
from site_client.study.store import SiteStore

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo_site(tmp_path_factory) -> Path:
    from demo.cohort import generate_cohort

    manifests = generate_cohort(tmp_path_factory.mktemp("demo"), sites=2, cases_per_site=14, progress=lambda s: None)
    return manifests[0].parent


@pytest.fixture()
def site(demo_site, tmp_path):
    folder = tmp_path / "site_a"
    shutil.copytree(demo_site, folder)
    protocol = load_protocol(REPO / "protocols" / "examples" / "demo_study.yaml")
    pid = protocol_id(protocol)
    context = SiteContext("site_a", protocol, pid, {pid}, folder / "manifest.csv", "manifest", tmp_path / "work")
    return context, SiteStore(context.work_dir, pid)


def _handshake(context):
    return handle("handshake", {"protocol_id": context.protocol_id, "phase": "handshake"}, context)


def _log(store) -> str:
    return store.path("notes.log").read_text(encoding="utf-8")


def _cohort_table(store) -> pd.DataFrame:
    return pd.read_parquet(store.path("cohort.parquet")).set_index("case_id")


def test_replaced_image_and_fixed_manifest_are_taken_up_by_the_next_run_only_for_changed_cases(site):
    context, store = site
    _handshake(context)
    assert "14 case(s) extracted, 0 unchanged, 0 failed" in _log(store)
    first = _cohort_table(store)

    # The data manager replaces case 3's image (here: by case 4's; case 3's mask stays) and fixes case 5's label.
    images = context.data.parent / "images"
    shutil.copyfile(images / "site_a-0004.nii.gz", images / "site_a-0003.nii.gz")
    text = context.data.read_text(encoding="utf-8")
    old_row = next(line for line in text.splitlines() if line.startswith("site_a-0005,"))
    cells = old_row.split(",")
    cells[3] = "0" if cells[3] == "1" else "1"
    context.data.write_text(text.replace(old_row, ",".join(cells)), encoding="utf-8")

    _handshake(context)
    assert "1 case(s) extracted, 13 unchanged, 0 failed" in _log(store)
    second = _cohort_table(store)
    intensity = [c for c in first.columns if c.startswith("stat_")]
    assert intensity and (second.loc["site_a-0003", intensity] != first.loc["site_a-0003", intensity]).any()
    assert second.loc["site_a-0005", "malignant"] == cells[3] != first.loc["site_a-0005", "malignant"]
    untouched = [c for c in first.index if c not in ("site_a-0003", "site_a-0005")]
    pd.testing.assert_frame_equal(second.loc[untouched], first.loc[untouched])


@pytest.mark.parametrize("change", ["image", "manifest"])
def test_a_change_during_a_run_is_refused_not_mixed_in(site, change):
    context, store = site
    _handshake(context)
    load_cohort(context, store)  # unchanged data: later messages are served
    if change == "image":  # another image copied over case 7's
        images = context.data.parent / "images"
        shutil.copyfile(images / "site_a-0008.nii.gz", images / "site_a-0007.nii.gz")
    else:  # the manifest edited (here: a blank line added)
        context.data.write_bytes(context.data.read_bytes() + b"\n")
    with pytest.raises(SiteStudyError) as err:
        load_cohort(context, store)
    message = str(err.value)
    assert "site site_a: the site's data changed during this run" in message
    assert "this message is refused" in message and "start a new run to use the new data" in message
    assert str(context.data.parent) not in message, "no path leaves the site"
    changed = "site_a-0007.nii.gz: replaced or modified" if change == "image" else "the manifest file's content changed"
    assert changed in _log(store)
    # The next run starts from the data as it now is.
    _handshake(context)
    load_cohort(context, store)


def test_repeated_case_id_in_a_joined_manifest_is_left_out_and_logged(site):
    context, store = site
    lines = context.data.read_text(encoding="utf-8").splitlines()
    twin = lines[5].split(",")
    twin[0] = lines[2].split(",")[0]  # line 6 reuses line 3's case id
    lines[5] = ",".join(twin)
    context.data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _handshake(context)  # (its counts of 12 cases may be withheld by the whole-run small-cell guard)
    assert len(_cohort_table(store)) == 12
    assert "site_a-0002" not in _cohort_table(store).index
    assert "case_id 'site_a-0002' is used on manifest lines 3, 6; case ids must be unique" in _log(store)
