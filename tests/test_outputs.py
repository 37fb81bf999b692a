import json

import numpy as np
import pytest
import trimesh
from PIL import Image
from trimesh.visual.material import PBRMaterial

from patchalign3d.outputs import file_stems, part_rgba, write_points_ply
from patchalign3d.results import MeshSegmentation, Segmentation

NAMES = ["seat", "back rest", "leg"]


def make_seg(mesh: trimesh.Trimesh, face_labels, names=NAMES, pieces=None) -> MeshSegmentation:
    """A mesh segmentation with chosen face labels (the writers are under test, not the model)."""
    k = len(names)
    pts = np.asarray(mesh.triangles_center, np.float32)
    return MeshSegmentation(
        points=pts, labels=np.asarray(face_labels, np.int64), point_logits=np.zeros((len(pts), k), np.float32),
        part_names=list(names), patch_centers=pts[:4], patch_logits=np.zeros((4, k), np.float32), mesh=mesh,
        face_labels=np.asarray(face_labels, np.int64), vertex_labels=np.zeros(len(mesh.vertices), np.int64),
        pieces=pieces or [],
    )


def textured_sphere(seed=0, shift=0.0, name="skin") -> trimesh.Trimesh:
    m = trimesh.creation.icosphere(subdivisions=2)
    m.apply_translation([shift, 0, 0])
    image = Image.fromarray((np.random.default_rng(seed).random((8, 8, 3)) * 255).astype(np.uint8))
    uv = (m.vertices[:, :2] - m.vertices[:, :2].min(0)) / np.ptp(m.vertices[:, :2], axis=0)
    m.visual = trimesh.visual.TextureVisuals(uv=uv, material=PBRMaterial(name=name, baseColorTexture=image))
    return m


def coloured_sphere() -> trimesh.Trimesh:
    m = trimesh.creation.icosphere(subdivisions=2)
    rgba = (np.random.default_rng(3).random((len(m.vertices), 4)) * 255).astype(np.uint8)
    rgba[:, 3] = 255
    m.visual.vertex_colors = rgba
    return m


def by_height(mesh) -> np.ndarray:
    """Labels from the face centres' height: 0 below -0.3, 1 above 0.3, 2 between."""
    y = mesh.triangles_center[:, 1]
    return np.where(y < -0.3, 0, np.where(y > 0.3, 1, 2))


def triangles(mesh) -> list[tuple]:
    """Faces as sorted tuples of rounded corner coordinates: comparable across vertex re-indexing."""
    return sorted(tuple(sorted(map(tuple, np.round(t, 5)))) for t in np.asarray(mesh.triangles))


def test_glb_has_one_named_node_per_part_holding_exactly_its_faces(tmp_path):
    mesh = textured_sphere()
    labels = by_height(mesh)
    seg = make_seg(mesh, labels)
    path = seg.save(tmp_path / "parts.glb")
    scene = trimesh.load(path, process=False)
    assert sorted(scene.graph.nodes_geometry) == sorted(NAMES)
    assert sum(len(g.faces) for g in scene.geometry.values()) == len(mesh.faces)
    for k, name in enumerate(NAMES):
        part = scene.geometry[name]
        assert triangles(part) == triangles(mesh.submesh([np.flatnonzero(labels == k)], append=True))
        # UVs and the texture travel with the faces
        assert part.visual.uv is not None and len(part.visual.uv) == len(part.vertices)
        assert np.array_equal(np.asarray(part.visual.material.baseColorTexture.convert("RGB")),
                              np.asarray(mesh.visual.material.baseColorTexture.convert("RGB")))
    record = json.loads((tmp_path / "parts.json").read_text())
    assert record["scene"] == "parts.glb" and record["part_names"] == NAMES
    assert record["face_labels"] == labels.tolist()
    assert record["faces_per_part"] == {n: int((labels == k).sum()) for k, n in enumerate(NAMES)}
    assert record["colors"][0] == "#{:02x}{:02x}{:02x}".format(*part_rgba(3)[0][:3])


def test_vertex_colours_are_kept(tmp_path):
    mesh = coloured_sphere()
    seg = make_seg(mesh, by_height(mesh))
    scene = trimesh.load(seg.save(tmp_path / "c.glb"), process=False)
    lookup = {tuple(np.round(v, 5)): c for v, c in zip(mesh.vertices, mesh.visual.vertex_colors)}
    for name in NAMES:
        part = scene.geometry[name]
        want = np.array([lookup[tuple(np.round(v, 5))] for v in part.vertices])
        assert np.abs(part.visual.vertex_colors.astype(int) - want.astype(int)).max() <= 1


def test_parts_colours_and_plain_meshes_get_part_colours(tmp_path):
    plain = trimesh.creation.icosphere(subdivisions=2)
    for mesh, colors in ((plain, "input"), (coloured_sphere(), "parts")):
        scene = trimesh.load(make_seg(mesh, by_height(mesh)).save(tmp_path / f"{colors}.glb", colors=colors), process=False)
        for k, name in enumerate(NAMES):
            assert np.array_equal(scene.geometry[name].visual.material.baseColorFactor, part_rgba(3)[k])


def test_scene_pieces_keep_their_materials_and_parts_spanning_pieces_group_them(tmp_path):
    a, b = textured_sphere(0, 0.0, "left"), textured_sphere(1, 3.0, "right")
    box = trimesh.creation.box()
    box.apply_translation([6.0, 0, 0])
    box.visual.face_colors = [200, 30, 30, 255]
    src = trimesh.Scene()
    for name, m in (("a", a), ("b", b), ("box", box)):
        src.add_geometry(m, node_name=name, geom_name=name)
    src.export(tmp_path / "three.glb")

    from patchalign3d.api import _as_mesh

    mesh, pieces = _as_mesh(tmp_path / "three.glb", None)
    assert sorted(len(p.faces) for p in pieces) == [12, 320, 320]
    # seat: the "left" sphere but one face (leg); back rest: the "right" sphere and the box
    labels = np.concatenate([np.full(len(p.faces), 0 if getattr(p.visual, "material", None) is not None
                                     and p.visual.material.name == "left" else 1) for p in pieces])
    labels[np.flatnonzero(labels == 0)[5]] = 2
    scene = trimesh.load(make_seg(mesh, labels, pieces=pieces).save(tmp_path / "parts.glb"), process=False)
    children = scene.graph.transforms.children
    assert sorted(children["world"]) == sorted(NAMES)
    assert sorted(children["back rest"]) == ["back rest.001", "back rest.002"]
    geoms = {n: scene.geometry[scene.graph[n][1]] for n in scene.graph.nodes_geometry}
    assert len(geoms["seat"].faces) == 319 and len(geoms["leg"].faces) == 1
    assert sorted(len(geoms[n].faces) for n in children["back rest"]) == [12, 320]
    assert geoms["seat"].visual.material.name == "left"
    assert {geoms[n].visual.kind for n in children["back rest"]} == {"texture", "vertex"}


def test_obj_and_gltf(tmp_path):
    mesh = textured_sphere()
    labels = by_height(mesh)
    seg = make_seg(mesh, labels)
    gltf = trimesh.load(seg.save(tmp_path / "p.gltf"), process=False)
    assert sorted(gltf.geometry) == sorted(NAMES)
    assert [p.name for p in tmp_path.iterdir()] and not list(tmp_path.glob("*.bin"))  # buffers embedded
    seg.save(tmp_path / "p.obj")
    assert (tmp_path / "p.mtl").is_file() and list(tmp_path.glob("p_*.png"))  # textures prefixed per file
    obj = trimesh.load(tmp_path / "p.obj", process=False, split_objects=True)
    for k, name in enumerate(NAMES):
        assert len(obj.geometry[name].faces) == (labels == k).sum()
        assert obj.geometry[name].visual.uv is not None


def test_split_dir_writes_one_file_per_part(tmp_path):
    mesh = coloured_sphere()
    labels = by_height(mesh)
    names = ["seat", "handles or handlebars", "leg/foot"]
    seg = make_seg(mesh, labels, names)
    files = seg.save_parts(tmp_path / "split")
    assert sorted(p.name for p in files) == ["handles_or_handlebars.glb", "leg_foot.glb", "seat.glb"]
    for k, path in enumerate(files):
        part = trimesh.load(path, process=False)
        assert list(part.geometry) == [names[k]] and len(part.geometry[names[k]].faces) == (labels == k).sum()
    stls = seg.save_parts(tmp_path / "stl", suffix="stl")
    assert sum(len(trimesh.load(p).faces) for p in stls) == len(mesh.faces)


def test_mesh_ply_keeps_face_order_with_a_label_per_face(tmp_path):
    mesh = coloured_sphere()
    labels = by_height(mesh)
    path = make_seg(mesh, labels).save(tmp_path / "m.ply")
    header = path.read_bytes().split(b"end_header")[0].decode()
    assert "comment part 1 back rest" in header and "property int label" in header
    back = trimesh.load(path, process=False)
    assert np.array_equal(back.faces, mesh.faces)
    assert np.array_equal(back.metadata["_ply_raw"]["face"]["data"]["label"].ravel(), labels)


def test_point_ply_has_integer_labels_and_names_in_the_header(tmp_path):
    pts = np.random.default_rng(1).normal(size=(50, 3)).astype(np.float32)
    labels = np.arange(50) % 3
    path = write_points_ply(tmp_path / "p.ply", pts, labels, ["wing", "tail  fin\n", "body"])
    header = path.read_bytes().split(b"end_header")[0].decode().splitlines()
    assert [ln for ln in header if ln.startswith("comment part")] == [
        "comment part 0 wing", "comment part 1 tail fin", "comment part 2 body"]
    back = trimesh.load(path)
    assert np.allclose(back.vertices, pts)
    assert np.array_equal(back.metadata["_ply_raw"]["vertex"]["data"]["label"], labels)
    from patchalign3d.viz import label_colors

    assert np.array_equal(back.colors[:, :3], label_colors(labels, 3))


def test_bad_outputs_name_the_problem(tmp_path):
    pts = np.zeros((5, 3), np.float32)
    seg = Segmentation(pts, np.zeros(5, np.int64), np.zeros((5, 1)), ["a"], pts[:1], np.zeros((1, 1)))
    with pytest.raises(ValueError, match="point-cloud segmentation; use .ply or .npz"):
        seg.save(tmp_path / "x.glb")
    with pytest.raises(ValueError, match=r"unsupported output type '\.fbx'"):
        seg.save(tmp_path / "x.fbx")
    with pytest.raises(ValueError, match="colors must be one of"):
        seg.save(tmp_path / "x.ply", colors="rainbow")
    assert file_stems(["a b", "A_B", "", "x/y"]) == ["a_b", "A_B_2", "part", "x_y"]
