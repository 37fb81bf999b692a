"""PartNet-Mobility loader on object folders written in SAPIEN's layout (result.json, mobility.urdf, semantics)."""

from __future__ import annotations

import json

import pytest

from patchalign3d.data import DatasetFormatError, PartNetMobility, build_dataset
from tests.data.bench_fixtures import node, write_bottle_3763, write_partnet_object


def cabinet(root, oid="101", point_ids=(3, 4, 8, 9)):
    """A cabinet with two doors (two links) and a body of two nested leaves ("frame" twice)."""
    tree = [node("storage_furniture", 0, [
        node("cabinet_frame", 1, [node("frame", 3), node("frame", 4)]),
        node("door_set", 2, [node("door", 8), node("door", 9)]),
    ])]
    return write_partnet_object(
        root, oid, "StorageFurniture", tree,
        links={"link_0": [("door", 8)], "link_1": [("door", 9)], "link_2": [("frame", 3), ("frame", 4)]},
        semantics={"link_0": "door", "link_1": "door", "link_2": "furniture_body"},
        point_ids=list(point_ids),
    )


def test_real_bottle_sample_reads_part_ids_from_result_json(tmp_path):
    """The sample the old loader refused ("link indices [5, 6, 7] are not listed in semantics.txt")."""
    write_bottle_3763(tmp_path)
    shape = PartNetMobility(tmp_path)[0]
    assert shape.uid == "3763" and shape.category == "Bottle"
    assert shape.part_names == ["body", "lid", "neck"]  # the category's names, sorted
    # blobs of 25 points with part ids 5 (body), 6 (neck), 7 (lid), -1 (none)
    assert shape.labels.tolist() == [0] * 25 + [2] * 25 + [1] * 25 + [-1] * 25
    own = PartNetMobility(tmp_path, vocabulary="object")[0]
    assert own.part_names == ["lid", "body", "neck"]  # tree order, nested groups skipped
    assert own.labels.tolist() == [1] * 25 + [2] * 25 + [0] * 25 + [-1] * 25


def test_link_labels_go_through_the_urdf_visuals(tmp_path):
    write_bottle_3763(tmp_path)
    shape = PartNetMobility(tmp_path, label_space="link")[0]
    assert shape.part_names == ["bottle", "lid"]
    # body (5) and neck (6) are visuals of link_1 ("bottle"), the lid (7) of link_0
    assert shape.labels.tolist() == [0] * 50 + [1] * 25 + [-1] * 25
    assert build_dataset("partnet", tmp_path, label_space="link")[0].part_names == ["bottle", "lid"]


def test_same_names_merge_and_category_vocabulary(tmp_path):
    cabinet(tmp_path)
    cabinet(tmp_path, "7", point_ids=(3, 9))
    write_bottle_3763(tmp_path)
    ds = PartNetMobility(tmp_path)
    assert [r.uid for r in ds.records] == ["7", "101", "3763"]  # numeric order
    cab = ds[1]
    assert cab.part_names == ["door", "frame"] and cab.labels.tolist() == [1] * 50 + [0] * 50
    links = PartNetMobility(tmp_path, label_space="link", categories=["storagefurniture"])
    assert links[1].part_names == ["door", "furniture_body"]
    assert links[1].labels.tolist() == [1] * 50 + [0] * 50  # two door links are one part
    assert len(PartNetMobility(tmp_path, categories=["Bottle"])) == 1


def test_errors_name_the_file(tmp_path):
    d = write_bottle_3763(tmp_path)
    (d / "point_sample" / "label-100.txt").write_text("5\n" * 99 + "12\n")
    with pytest.raises(DatasetFormatError, match=r"label-100\.txt: part ids \[12\] are not among result\.json"):
        PartNetMobility(tmp_path)[0]
    with pytest.raises(DatasetFormatError, match=r"part ids \[12\] are not among mobility\.urdf's visuals"):
        PartNetMobility(tmp_path, label_space="link")[0]
    with pytest.raises(ValueError, match="use vocabulary='object'"):
        PartNetMobility(tmp_path, label_space="object")
    (d / "semantics.txt").write_text("link_1 static bottle\n")
    with pytest.raises(DatasetFormatError, match=r"semantics\.txt: lists no 'link_0', whose visual holds part 7"):
        PartNetMobility(tmp_path, label_space="link")
    (d / "mobility.urdf").write_text("<robot><link name='link_0'><visual name='lid'/></link></robot>")
    with pytest.raises(DatasetFormatError, match=r"mobility\.urdf: link 'link_0': visual name 'lid' is not"):
        PartNetMobility(tmp_path, label_space="link")
    (d / "result.json").write_text(json.dumps([{"name": "bottle", "children": []}]))
    with pytest.raises(DatasetFormatError, match=r"result\.json: every node needs an 'id'"):
        PartNetMobility(tmp_path)
    (d / "result.json").unlink()
    with pytest.raises(DatasetFormatError, match=r"result\.json: missing"):
        PartNetMobility(tmp_path)
