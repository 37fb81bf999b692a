"""Writers of tiny benchmark folders in the real on-disk formats (used by the loader and evaluation tests)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

SYNSETS = {"Skateboard": "04225987", "Table": "04379243", "Chair": "03001627"}
OFFSETS = {"Skateboard": 44, "Table": 47, "Chair": 12}


def blob(counts: Sequence[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Points in separate clusters, ``counts[k]`` of them with label ``k`` (label ``-1`` for a negative key)."""
    rng = np.random.default_rng(seed)
    pts, labels = [], []
    for k, n in enumerate(counts):
        centre = np.array([np.cos(k), np.sin(k), 0.3 * k])
        pts.append(centre + 0.1 * rng.normal(size=(n, 3)))
        labels.append(np.full(n, k))
    return np.concatenate(pts).astype(np.float32), np.concatenate(labels).astype(np.int64)


def write_shapenetpart(root: Path, shapes: Sequence[tuple[str, str, str, Sequence[int]]]) -> Path:
    """``shapes``: (category, shape id, split, per-part counts in local label order)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "synsetoffset2category.txt").write_text(
        "".join(f"{c}\t{s}\n" for c, s in sorted(SYNSETS.items()))
    )
    lists: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for i, (cat, sid, split, counts) in enumerate(shapes):
        pts, local = blob(counts, seed=i)
        normals = np.tile([0.0, 0.0, 1.0], (len(pts), 1))
        table = np.concatenate([pts, normals, (local + OFFSETS[cat])[:, None]], axis=1)
        folder = root / SYNSETS[cat]
        folder.mkdir(exist_ok=True)
        np.savetxt(folder / f"{sid}.txt", table, fmt="%.6f")
        lists[split].append(f"shape_data/{SYNSETS[cat]}/{sid}")
    (root / "train_test_split").mkdir(exist_ok=True)
    for split, entries in lists.items():
        (root / "train_test_split" / f"shuffled_{split}_file_list.json").write_text(json.dumps(entries))
    return root


def write_shapenetpart_h5(
    root: Path, shapes: Sequence[tuple[int, np.ndarray, np.ndarray]], split: str = "test"
) -> Path:
    """``shapes``: (category index 0..15, points (N, 3), global part ids (N,)), written to one file."""
    import h5py

    root.mkdir(parents=True, exist_ok=True)
    name = f"ply_data_{split}0.h5"
    with h5py.File(root / name, "w") as f:
        f["data"] = np.stack([s[1] for s in shapes]).astype(np.float32)
        f["label"] = np.array([[s[0]] for s in shapes], dtype=np.uint8)
        f["pid"] = np.stack([s[2] for s in shapes]).astype(np.uint8)
    (root / f"{split}_hdf5_file_list.txt").write_text(f"hdf5_data/{name}\n")
    return root


def write_obj(path: Path, verts: np.ndarray) -> None:
    faces = "".join(f"f {i + 1} {i + 2} {i + 3}\n" for i in range(0, len(verts) - 2, 3))
    path.write_text("# test mesh\n" + "".join(f"v {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in verts) + faces)


def write_faust_satr(root: Path, meshes: dict[str, Sequence[str]]) -> Path:
    """``meshes``: name -> per-vertex label strings."""
    (root / "scans").mkdir(parents=True, exist_ok=True)
    for i, (name, labels) in enumerate(meshes.items()):
        verts = np.random.default_rng(i).normal(size=(len(labels), 3))
        write_obj(root / "scans" / f"{name}.obj", verts)
    (root / "meshes.txt").write_text("".join(f"{n}\n" for n in meshes))
    (root / "coarse_gt.json").write_text(json.dumps({n: list(v) for n, v in meshes.items()}))
    return root


def write_faust_npz(root: Path, shapes: dict[str, tuple[Sequence[str], np.ndarray]]) -> Path:
    """``shapes``: name -> (label names, labels (N,))."""
    root.mkdir(parents=True, exist_ok=True)
    for i, (name, (names, labels)) in enumerate(shapes.items()):
        pts = np.random.default_rng(i).normal(size=(len(labels), 3)).astype(np.float32)
        np.savez(root / f"{name}.npz", points=pts, labels=np.asarray(labels), label_names=np.array(names))
    return root


def write_pcd(path: Path, pts: np.ndarray, binary: bool = False) -> None:
    n = len(pts)
    head = (
        "# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS x y z rgb\nSIZE 4 4 4 4\n"
        f"TYPE F F F F\nCOUNT 1 1 1 1\nWIDTH {n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\n"
    )
    rgb = np.zeros((n, 1), np.float32)
    if binary:
        path.write_bytes((head + "DATA binary\n").encode() + np.hstack([pts, rgb]).astype("<f4").tobytes())
    else:
        path.write_text(head + "DATA ascii\n" + "".join(f"{x:.6f} {y:.6f} {z:.6f} 0\n" for x, y, z in pts))


def write_objaverse(
    root: Path, split: str, objects: dict[str, tuple[Sequence[str], Sequence[int]]], binary: bool = False
) -> Path:
    """``objects``: folder name -> (part names for labels 1..K, counts per raw label 0..K (0 = unlabelled))."""
    for i, (folder, (names, counts)) in enumerate(objects.items()):
        d = root / split / folder
        d.mkdir(parents=True, exist_ok=True)
        pts, raw = blob(counts, seed=i)
        write_pcd(d / "points5000.pcd", pts, binary=binary)
        np.save(d / "labels.npy", raw)  # raw label k = blob k; 0 is the unlabelled blob
        (d / "label_map.json").write_text(json.dumps({str(k + 1): n for k, n in enumerate(names)}))
    return root


def write_partnet_object(
    root: Path,
    oid: str,
    category: str,
    tree: list[dict],
    links: dict[str, list[tuple[str, int]]],
    semantics: dict[str, str],
    point_ids: Sequence[int],
    per_part: int = 25,
) -> Path:
    """One PartNet-Mobility object folder as SAPIEN ships it.

    Args:
        tree: ``result.json`` (a list of root nodes).
        links: URDF link name -> [(part name, part id)] of its visuals.
        semantics: link name -> semantic label (``semantics.txt``).
        point_ids: the part id (or -1) of each blob of ``per_part`` points in ``label-<N>.txt``.
    """
    d = root / oid
    (d / "point_sample").mkdir(parents=True, exist_ok=True)
    pts, b = blob([per_part] * len(point_ids), seed=int(oid) % 1000)
    n = len(pts)
    np.savetxt(d / "point_sample" / f"pts-{n}.txt", pts, fmt="%.6f")
    np.savetxt(d / "point_sample" / f"label-{n}.txt", np.asarray(point_ids)[b], fmt="%d")
    (d / "result.json").write_text(json.dumps(tree))
    body = "".join(
        f'  <link name="{link}">\n'
        + "".join(
            f'    <visual name="{name}-{pid}">\n      <origin xyz="0 0 0"/>\n      <geometry>\n'
            f'        <mesh filename="textured_objs/original-{pid}.obj"/>\n      </geometry>\n    </visual>\n'
            for name, pid in visuals
        )
        + "  </link>\n"
        for link, visuals in links.items()
    )
    (d / "mobility.urdf").write_text(
        f'<?xml version="1.0" ?>\n<robot name="partnet_{oid}">\n  <link name="base"/>\n{body}</robot>\n'
    )
    joints = {"lid": "slider", "door": "hinge"}
    (d / "semantics.txt").write_text(
        "".join(f"{link} {joints.get(label, 'static')} {label}\n" for link, label in semantics.items())
    )
    (d / "meta.json").write_text(json.dumps({"model_cat": category, "model_id": oid}))
    return d


def node(name: str, pid: int, children: Sequence[dict] | None = None) -> dict:
    """A ``result.json`` node: a leaf with ``objs``, or a group with ``children``."""
    out = {"text": name.replace("_", " ").title(), "name": name, "id": pid}
    if children:
        out["children"] = list(children)
    else:
        out["objs"] = [f"original-{pid}"]
    return out


def write_bottle_3763(root: Path) -> Path:
    """PartNet-Mobility bottle 3763 in its real layout: parts body 5, neck 6, lid 7 (nested in groups); body and
    neck are visuals of link_1, the lid of link_0. 25 points each of body, neck, lid, then 25 unlabelled."""
    tree = [node("bottle", 0, [node("normal_bottle", 1, [node("lid", 7), node("bottle_body", 2, [node("body", 5), node("neck", 6)])])])]
    return write_partnet_object(
        root, "3763", "Bottle", tree,
        links={"link_0": [("lid", 7)], "link_1": [("body", 5), ("neck", 6)]},
        semantics={"link_0": "lid", "link_1": "bottle"},
        point_ids=[5, 6, 7, -1],
    )


def write_ply_cloud(path: Path, pts: np.ndarray, binary: bool = True) -> None:
    """A coloured point cloud PLY (x y z float, red green blue uchar), binary as PartNetE's pc.ply or ascii."""
    n = len(pts)
    head = (f"ply\nformat {'binary_little_endian' if binary else 'ascii'} 1.0\nelement vertex {n}\n"
            "property float x\nproperty float y\nproperty float z\n"
            "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
    if binary:
        rec = np.zeros(n, dtype=[("xyz", "<f4", 3), ("rgb", "u1", 3)])
        rec["xyz"], rec["rgb"] = pts, 128
        path.write_bytes(head.encode() + rec.tobytes())
    else:
        path.write_text(head + "".join(f"{x:.6f} {y:.6f} {z:.6f} 128 128 128\n" for x, y, z in pts))


def write_partnete(
    root: Path,
    objects: dict[str, dict[str, Sequence[int]]],
    meta: dict[str, list[str]],
    nested: bool = False,
) -> Path:
    """PartNetE as PartSLIP ships it. ``objects``: category -> {object id: counts per blob}; blob ``k`` has
    semantic label ``k - 1`` (blob 0 is the unlabelled -1 points)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "PartNetE_meta.json").write_text(json.dumps(meta))
    test = root / "data" / "test" if nested else root / "test"
    for c, (cat, objs) in enumerate(sorted(objects.items())):
        for i, (oid, counts) in enumerate(objs.items()):
            d = test / cat / oid
            d.mkdir(parents=True, exist_ok=True)
            pts, k = blob(counts, seed=10 * c + i)
            write_ply_cloud(d / "pc.ply", pts, binary=(i % 2 == 0))
            np.save(d / "label.npy", {"semantic_seg": k - 1, "instance_seg": np.where(k > 0, k, -1)})
    return root


def write_scanobjectnn(
    root: Path,
    scans: Sequence[tuple[str, int, bool, Sequence[int]]],
    semantic: dict[str, Sequence[int]] | None = None,
    folder: str = "object_dataset_complete_with_parts_",
) -> Path:
    """ScanObjectNN's raw release with parts, as its README describes it: ``split_new.txt`` and, per scan,
    ``<category>/<stem>.bin`` (float32 count, then x y z nx ny nz r g b instance_label semantic_label per point)
    and ``<stem>_part.bin`` (float32 count, then two floats per point, the last the part id).

    ``scans``: (stem, category id, is test, part id of each point); ``semantic``: stem -> per-point semantic
    label (default 5 everywhere). Returns the folder holding ``folder``.
    """
    from patchalign3d.data.scanobjectnn import SCANOBJECTNN_CATEGORIES

    data = root / folder
    data.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (stem, cid, is_test, part_ids) in enumerate(scans):
        ids = np.asarray(part_ids, dtype=np.float32)
        n = len(ids)
        rng = np.random.default_rng(i)
        table = np.zeros((n, 11), np.float32)
        table[:, :3] = rng.normal(size=(n, 3)) + ids[:, None]  # parts apart from each other
        table[:, 3:6] = rng.normal(size=(n, 3))
        table[:, 6:9] = rng.integers(0, 255, size=(n, 3))
        table[:, 9] = 1.0
        table[:, 10] = np.asarray((semantic or {}).get(stem, [5] * n), dtype=np.float32)
        cat = data / SCANOBJECTNN_CATEGORIES[cid]
        cat.mkdir(exist_ok=True)
        np.concatenate([[np.float32(n)], table.reshape(-1)]).astype("<f4").tofile(cat / f"{stem}.bin")
        parts = np.stack([np.zeros(n, np.float32), ids], axis=1)
        np.concatenate([[np.float32(n)], parts.reshape(-1)]).astype("<f4").tofile(cat / f"{stem}_part.bin")
        lines.append(f"{stem}.bin\t{cid}" + ("\tt" if is_test else ""))
    (data / "split_new.txt").write_text("\n".join(lines) + "\n")
    return root
