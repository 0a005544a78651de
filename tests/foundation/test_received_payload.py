"""A received payload is indexed by prefix once: unnest / prefixes give exactly what the plain scan gives."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from protocols.payload import ReceivedPayload, prefixes, unnest


def _payload() -> dict:
    payload = {"phase": "calibrate", "site": "a", "before": 1, "beforehand/x": 2}
    for model in ("f1/raw/radiomic", "f1/harmonised/volume", "_all/raw/radiomic"):
        payload[f"before/{model}/histograms/pos"] = np.arange(3.0)
        payload[f"before/{model}/calibration/n"] = 4
        for j in range(3):
            payload[f"terms/{model}/{j}/grad"] = np.ones(2) * j
            payload[f"terms/{model}/{j}/nll"] = float(j)
    return payload


@pytest.mark.parametrize("prefix", ["before", "before/f1/raw/radiomic", "terms/_all/raw/radiomic/2", "terms/f1",
                                    "beforehand", "missing", "phase", "terms/f1/raw/radiomic/1/grad"])
def test_indexed_reads_equal_the_plain_scan(prefix):
    plain, received = _payload(), ReceivedPayload(_payload())
    assert list(received) == list(plain)
    got, want = unnest(received, prefix), unnest(plain, prefix)
    assert list(got) == list(want)  # same keys, same order
    assert all(np.array_equal(got[k], want[k]) for k in want)
    for depth in (1, 2, 4):
        assert prefixes(received, prefix, depth) == prefixes(plain, prefix, depth)


def test_a_received_payload_is_read_only_and_survives_pickling():
    received = ReceivedPayload(_payload())
    with pytest.raises(TypeError, match="a received payload is read-only"):
        received["phase"] = "train"
    with pytest.raises(TypeError, match="read-only"):
        received.pop("phase")
    copy = dict(received)
    copy["phase"] = "train"  # a plain copy can be changed
    again = pickle.loads(pickle.dumps(received))
    assert isinstance(again, ReceivedPayload) and again.keys_under("terms/f1") == received.keys_under("terms/f1")
