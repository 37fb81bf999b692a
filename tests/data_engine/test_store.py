"""Store schema, atomic staging, split assignment, and a LitData round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_engine.litdata_jobs import write_dataset
from data_engine.store import (
    RECORD_KEYS,
    SCHEMA_VERSION,
    Staging,
    assign_split,
    decode_record,
    make_record,
    open_split,
)


def fake_record(uid: str, n: int = 40, d: int = 6, k: int = 2, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(n, d))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    return make_record(
        uid,
        "cat" if k else "",
        rng.random((n, 3)),
        feats,
        [f"part {i}" for i in range(k)],
        rng.random((k, n)) < 0.5,
        {"teacher": "t", "pretrained": False, "views": 4, "resolution": 64},
    )


def _emit(item):  # module level: LitData pickles the function into its worker
    uid, k, seed = item
    yield fake_record(uid, k=k, seed=seed)


def test_record_schema():
    rec = fake_record("a/b")
    assert tuple(rec) == RECORD_KEYS
    assert rec["points"].dtype == np.float32 and rec["features"].dtype == np.float16
    assert rec["part_masks"].dtype == np.uint8 and rec["part_masks"].shape == (2, 40)
    meta = json.loads(rec["meta"])
    assert meta["schema_version"] == SCHEMA_VERSION and meta["pretrained"] is False


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("features", np.zeros((39, 6), np.float16), "features"),
        ("part_masks", np.zeros((3, 40), np.uint8), "part_masks"),
        ("points", np.full((40, 3), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_records_are_rejected(field, value, match):
    rec = fake_record("x")
    rec[field] = value
    with pytest.raises(ValueError, match=match):
        make_record(
            **{k: rec[k] for k in ("uid", "category", "points", "features")},
            part_names=json.loads(rec["part_names"]),
            part_masks=rec["part_masks"],
            meta={},
        )


def test_staging_round_trip_is_atomic(tmp_path):
    staging = Staging(tmp_path / "staging")
    rec = fake_record("03001627/abc/model")
    staging.write_failure(rec["uid"], "p", "boom")
    staging.write_record(rec)
    assert staging.has_record(rec["uid"]) and not staging.has_failure(rec["uid"])  # success clears the note
    back = staging.read_record(rec["uid"])
    for key in RECORD_KEYS:
        np.testing.assert_array_equal(back[key], rec[key])
    assert isinstance(back["meta"], str)
    assert [p.name for p in staging.root.iterdir() if p.name.startswith(".")] == []  # no temp files left
    staging.write_failure("bad", "bad.ply", "MeshError: empty")
    assert staging.failures() == [{"uid": "bad", "path": "bad.ply", "reason": "MeshError: empty"}]
    assert staging.count_done() == 2
    assert staging.listing() == ({rec["uid"]}, {"bad"})  # uids back from the file names (quoted "/")


def test_staging_refuses_records_of_other_settings(tmp_path):
    staging = Staging(tmp_path)
    staging.bind_config({"teacher": "a"})
    staging.bind_config({"teacher": "a"})
    with pytest.raises(RuntimeError, match="teacher"):
        staging.bind_config({"teacher": "b"})


def test_split_assignment_is_stable_and_proportional():
    uids = [f"shape{i}" for i in range(4000)]
    splits = [assign_split(u, 0.1, seed=0) for u in uids]
    share = splits.count("val") / len(uids)
    assert 0.085 < share < 0.115  # binomial sd is 0.005
    assert splits == [assign_split(u, 0.1, seed=0) for u in uids]
    assert splits != [assign_split(u, 0.1, seed=1) for u in uids]
    assert assign_split("x", 0.0) == "train" and assign_split("x", 1.0) == "val"


def test_litdata_round_trip(tmp_path):
    items = [("u0", 2, 0), ("u1", 0, 1), ("u2", 3, 2)]
    write_dataset(_emit, items, tmp_path / "train", num_workers=1, start_method="fork")
    dataset = open_split(tmp_path, "train")
    assert len(dataset) == 3
    for i, (uid, k, seed) in enumerate(items):
        expected, got = fake_record(uid, k=k, seed=seed), dataset[i]
        assert set(got) == set(RECORD_KEYS)
        for key in RECORD_KEYS:
            assert type(got[key]) is type(expected[key])
            if isinstance(expected[key], np.ndarray):
                assert got[key].dtype == expected[key].dtype and got[key].shape == expected[key].shape
            np.testing.assert_array_equal(got[key], expected[key])
        decoded = decode_record(got)
        assert (
            decoded["part_names"] == [f"part {j}" for j in range(k)] and decoded["part_masks"].dtype == bool
        )


def test_building_a_split_leaves_the_process_start_method_alone(tmp_path):
    import multiprocessing

    before = multiprocessing.get_start_method(allow_none=True)
    write_dataset(_emit, [("u0", 2, 0)], tmp_path / "train", num_workers=1, start_method="spawn")
    assert multiprocessing.get_start_method(allow_none=True) == before
