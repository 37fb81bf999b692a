"""The LightningCLI behind ``lightning`` and ``patchalign3d fit|validate|test|predict``.

Model and data are chosen in the config (subclass mode), e.g.::

    model:
      class_path: patchalign3d.lit.Stage1Module
      init_args: {arch: base}
    data:
      class_path: patchalign3d.lit.StoreDataModule
      init_args: {store: outputs/store}

Configs are parsed in omegaconf+ mode, so a value may interpolate another (``${trainer.default_root_dir}``)
or the environment (``${oc.env:STORE,outputs/store}``), resolved once the command line is merged in
(``--trainer.default_root_dir X`` moves what interpolates it). ``precision: ${precision_auto:cpu}`` resolves to
``bf16-mixed`` where the hardware runs bf16 natively and ``32-true`` elsewhere
(:func:`patchalign3d.precision.training_precision`).

Resuming (``--ckpt_path``): ``last`` is resolved here to the newest intact checkpoint of the run's checkpoint
folder (a new run when there is none yet, so one command both starts and resumes a preemptible job); a damaged
file falls back to the newest intact one beside it; the restored module never reads ``init_from`` (the
checkpoint holds every weight).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from jsonargparse import set_parsing_settings
from lightning import LightningDataModule, LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import OmegaConf

import patchalign3d.lit  # noqa: F401 - registers the package's modules for short class names
from patchalign3d.precision import training_precision

from .checkpoint_callback import ResumableCheckpoint, unwritable_folder_problem
from .checkpoint_files import intact_checkpoint, latest_checkpoint
from .errors import TrainingSetupError

OmegaConf.register_new_resolver("precision_auto", training_precision, replace=True)
# Configs write ${trainer.default_root_dir} from their own root; under a subcommand it lives at fit.trainer...
set_parsing_settings(omegaconf_absolute_to_relative_paths=True)

__all__ = ["PatchAlign3DCLI", "cli_main"]


def _import(class_path: str) -> Any:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def checkpoint_folders(trainer_config: Any) -> list[Path]:
    """The folders the configured checkpoint callbacks write to (where ``--ckpt_path last`` looks)."""
    root = trainer_config.get("default_root_dir") or os.getcwd()
    folders = []
    for callback in trainer_config.get("callbacks") or []:
        class_path = getattr(callback, "class_path", None)
        cls = _import(class_path) if class_path else type(callback)
        if not (isinstance(cls, type) and issubclass(cls, ModelCheckpoint)):
            continue
        dirpath = callback.init_args.get("dirpath") if class_path else callback.dirpath
        if dirpath is None and issubclass(cls, ResumableCheckpoint):
            dirpath = os.path.join(root, "checkpoints")
        if dirpath is not None and Path(dirpath) not in folders:
            folders.append(Path(dirpath))
    return folders


def resolve_ckpt_path(ckpt_path: str | None, folders: list[Path]) -> str | None:
    """The checkpoint a ``--ckpt_path`` value resumes: ``last`` -> the newest intact one of ``folders`` (None:
    there is none, a new run), a damaged file -> the newest intact one beside it; other values unchanged."""
    if ckpt_path == "last":
        for folder in folders:
            if (found := latest_checkpoint(folder)) is not None:
                return str(found)
        rank_zero_info(f"--ckpt_path last: no checkpoint in {', '.join(map(str, folders)) or 'any folder'} yet; "
                       "starting a new run")
        return None
    if ckpt_path is None or "://" in str(ckpt_path) or ckpt_path in ("best", "hpc"):
        return ckpt_path
    return str(intact_checkpoint(ckpt_path))


class PatchAlign3DCLI(LightningCLI):
    """LightningCLI that resolves ``--ckpt_path`` for resuming and reports set-up problems in one sentence.

    With ``--ckpt_path``, LightningCLI replaces the configured model by the one the checkpoint was written
    with, so a stage-1 checkpoint given to a stage-2 config would silently resume stage 1: that is refused
    (stage 2 starts from stage 1 through ``model.init_from``). A resumed module is built without its
    ``init_from``, so a stage-2 run resumes from its own checkpoint alone.
    """

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        sub = self.config.get("subcommand")
        model = self.config[sub].get("model") if sub else None
        self._configured_model = getattr(model, "class_path", None)
        if sub and self.config[sub].get("ckpt_path"):
            folders = checkpoint_folders(self.config[sub].trainer)
            self.config[sub].ckpt_path = resolve_ckpt_path(self.config[sub].ckpt_path, folders)

    def before_instantiate_classes(self) -> None:
        sub = self.config.get("subcommand")
        if sub == "fit":  # before the trainer's own set-up writes anything under default_root_dir
            for folder in checkpoint_folders(self.config[sub].trainer):
                if "://" not in str(folder) and (problem := unwritable_folder_problem(folder)):
                    raise TrainingSetupError(problem)
        if not sub or not self.config[sub].get("ckpt_path") or self._configured_model is None:
            return
        model = self.config[sub].model
        if model.class_path != self._configured_model:
            ckpt = self.config[sub].ckpt_path
            raise TrainingSetupError(
                f"--ckpt_path {ckpt} was written by {model.class_path}, but this config trains "
                f"{self._configured_model}. --ckpt_path only resumes a run of the same stage; to start stage 2 "
                f"from a stage-1 checkpoint, pass it as --model.init_from {ckpt}"
            )
        for group in ("init_args", "dict_kwargs"):  # the checkpoint's hyperparameters land in dict_kwargs
            if model.get(group) and model[group].get("init_from") is not None:
                model[group]["init_from"] = None

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as err:
            # jsonargparse reports a model's own __init__ error inside a "Does not validate against any of the
            # Union subtypes ... Namespace(...)" message; build the model once more to show the error itself.
            cause = self._model_error()
            if cause is None:
                raise
            raise TrainingSetupError(f"the model could not be built: {cause}") from err

    def _model_error(self) -> Exception | None:
        sub = self.config.get("subcommand")
        model = (self.config[sub] if sub else self.config).get("model")
        if model is None or not getattr(model, "class_path", None):
            return None
        kwargs = {**(model.get("init_args") or {}), **(model.get("dict_kwargs") or {})}
        try:
            _import(model.class_path)(**{k: v.as_dict() if hasattr(v, "as_dict") else v for k, v in kwargs.items()})
        except Exception as err:  # the error to report, whatever its type
            return err
        return None


def cli_main(args: list[str] | None = None, run: bool = True) -> LightningCLI:
    """Build (and with ``run=True`` execute) the training CLI.

    Args:
        args: command-line arguments (default: ``sys.argv[1:]``), e.g. ``["fit", "-c", "configs/stage1.yaml"]``.
        run: run the subcommand; with ``run=False`` the CLI only parses and instantiates (no subcommand).

    Returns:
        The :class:`PatchAlign3DCLI` (a :class:`~lightning.pytorch.cli.LightningCLI`) (``.model``, ``.datamodule``, ``.trainer``, ``.config``).
    """
    return PatchAlign3DCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        run=run,
        # omegaconf+: interpolations resolve after the command line is merged, so ${trainer.default_root_dir}
        # follows --trainer.default_root_dir.
        parser_kwargs={"parser_mode": "omegaconf+"},
        # The resolved config is written to the run's log folder; re-running into the same folder replaces it.
        save_config_kwargs={"overwrite": True},
        # Both modules set up AdamW with their own parameter groups (encoder vs head learning rates).
        auto_configure_optimizers=False,
    )


if __name__ == "__main__":  # `python -m patchalign3d.lit.cli fit ...` (also how DDP re-launches its ranks)
    cli_main()
