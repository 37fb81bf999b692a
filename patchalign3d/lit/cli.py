"""The LightningCLI behind ``lightning`` and ``patchalign3d fit|validate|test|predict``.

Model and data are chosen in the config (subclass mode), e.g.::

    model:
      class_path: patchalign3d.lit.Stage1Module
      init_args: {arch: base}
    data:
      class_path: patchalign3d.lit.StoreDataModule
      init_args: {store: outputs/store}

Configs are parsed in omegaconf mode, so a value may interpolate another (``${trainer.default_root_dir}``)
or the environment (``${oc.env:STORE,outputs/store}``). ``precision: ${precision_auto:cpu}`` resolves to
``bf16-mixed`` where the hardware runs bf16 natively and ``32-true`` elsewhere
(:func:`patchalign3d.precision.training_precision`).
"""

from __future__ import annotations

from lightning import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI
from omegaconf import OmegaConf

import patchalign3d.lit  # noqa: F401 - registers the package's modules for short class names
from patchalign3d.precision import training_precision

OmegaConf.register_new_resolver("precision_auto", training_precision, replace=True)

__all__ = ["PatchAlign3DCLI", "cli_main"]


class PatchAlign3DCLI(LightningCLI):
    """LightningCLI that refuses a ``--ckpt_path`` of another training stage.

    With ``--ckpt_path``, LightningCLI replaces the configured model by the one the checkpoint was written
    with, so a stage-1 checkpoint given to a stage-2 config would silently resume stage 1. Stage 2 starts
    from stage 1 through ``model.init_from`` instead.
    """

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        sub = self.config.get("subcommand")
        model = self.config[sub].get("model") if sub else None
        self._configured_model = getattr(model, "class_path", None)

    def before_instantiate_classes(self) -> None:
        sub = self.config.get("subcommand")
        if not sub or not self.config[sub].get("ckpt_path") or self._configured_model is None:
            return
        restored = self.config[sub].model.class_path
        if restored != self._configured_model:
            ckpt = self.config[sub].ckpt_path
            raise ValueError(
                f"--ckpt_path {ckpt} was written by {restored}, but this config trains {self._configured_model}. "
                "--ckpt_path only resumes a run of the same stage; to start stage 2 from a stage-1 checkpoint, "
                f"pass it as --model.init_from {ckpt}"
            )


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
        parser_kwargs={"parser_mode": "omegaconf"},
        # The resolved config is written to the run's log folder; re-running into the same folder replaces it.
        save_config_kwargs={"overwrite": True},
        # Both modules set up AdamW with their own parameter groups (encoder vs head learning rates).
        auto_configure_optimizers=False,
    )


if __name__ == "__main__":  # `python -m patchalign3d.lit.cli fit ...` (also how DDP re-launches its ranks)
    cli_main()
