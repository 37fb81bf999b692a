"""Every name the README and the design's public contracts mention stays importable from where they say,
whatever module the code lives in now (the model's config, the text encoders and the writers moved)."""

import importlib

import pytest

# Module -> names that README.md and the design document show users importing or calling from it.
DOCUMENTED = {
    "patchalign3d": [
        "segment", "segment_mesh", "segment_files", "load_model", "export_released", "TextBank", "get_text_encoder",
        "Segmentation", "MeshSegmentation", "PatchAlign3D", "PatchAlign3DConfig", "CheckpointError",
        "WeightsUnavailableError", "__version__",
    ],
    "patchalign3d.api": ["segment", "segment_mesh", "point_features", "PointFeatures", "text_embeddings"],
    "patchalign3d.model": [
        "PatchAlign3D", "PatchAlign3DConfig", "PointPatchEncoder", "patchalign3d_base", "patchalign3d_tiny",
        "Patches", "farthest_point_sample", "group_points", "knn", "nearest_center",
    ],
    "patchalign3d.model.checkpoint": [
        "load_model", "export_released", "export_checkpoint", "model_from_released", "model_from_lightning",
        "safe_load", "resolve_source", "DEFAULT_REPO", "DEFAULT_FILENAME",
    ],
    "patchalign3d.model.patchalign3d": [
        "PatchAlign3D", "PatchAlign3DConfig", "PointPatchEncoder", "RELEASE_TEMPERATURE", "MAX_LOGIT_SCALE",
        "ASSIGN_MODES", "AssignMode", "patchalign3d_base", "patchalign3d_tiny",
    ],
    "patchalign3d.model.hub": ["PatchAlign3DHubMixin", "MODEL_CARD", "hub_config"],
    "patchalign3d.model.inference": ["cached_inference_copy", "inference_copy"],
    "patchalign3d.model.grouping": ["Patches", "group_points", "farthest_point_sample", "knn"],
    "patchalign3d.text": [
        "TextBank", "TextEncoder", "OpenCLIPTextEncoder", "HFTextEncoder", "get_text_encoder", "spec_from_meta",
        "UnknownTextEncoderError", "WeightsUnavailableError", "clean_name", "validate_part_names",
        "TEMPLATE_SETS", "DEFAULT_TEMPLATES", "CATEGORY_TEMPLATES", "ENSEMBLE_TEMPLATES", "MissingPartNamesError",
    ],
    "patchalign3d.text.encoders": [
        "TextEncoder", "OpenCLIPTextEncoder", "HFTextEncoder", "get_text_encoder", "spec_from_meta",
        "UnknownTextEncoderError", "WeightsUnavailableError", "mean_pool", "max_pool", "cls_pool", "last_token_pool",
        "DEFAULT_OPENCLIP_MODEL", "DEFAULT_OPENCLIP_PRETRAINED", "MINILM_NAME",
    ],
    "patchalign3d.results": ["Segmentation", "MeshSegmentation"],
    "patchalign3d.outputs": ["save", "save_parts", "COLOR_MODES", "PART_FILE_SUFFIXES", "SCENE_SUFFIXES"],
    "patchalign3d.keypoints": [
        "detect_keypoints", "KeypointPrototypes", "lift_keypoints", "FeaturePointer", "MolmoPointer",
    ],
    "patchalign3d.precision": ["DEFAULT_DTYPE", "DTYPE_NAMES", "resolve_dtype"],
    "patchalign3d.errors": ["CheckpointError", "WeightsUnavailableError"],
    "data_engine.synthetic": ["write_dataset"],
}


@pytest.mark.parametrize("module", sorted(DOCUMENTED))
def test_documented_names_import(module):
    mod = importlib.import_module(module)
    missing = [name for name in DOCUMENTED[module] if not hasattr(mod, name)]
    assert not missing, f"{module} lost {missing}"


@pytest.mark.parametrize("module", ["patchalign3d", "patchalign3d.model", "patchalign3d.text",
                                    "patchalign3d.text.encoders", "patchalign3d.keypoints"])
def test_all_lists_only_names_that_exist(module):
    mod = importlib.import_module(module)
    assert [name for name in mod.__all__ if not hasattr(mod, name)] == []
