"""dtype names and what dtype="auto" picks on this machine's hardware."""

from pathlib import Path

import pytest
import torch

from patchalign3d import precision
from patchalign3d.precision import cpu_bf16_features, dtype_name, fast_bf16, parse_dtype, resolve_dtype


@pytest.mark.parametrize(
    "given, expected",
    [
        ("float32", torch.float32),
        ("fp32", torch.float32),
        ("bfloat16", torch.bfloat16),
        ("bf16", torch.bfloat16),
        (torch.float32, torch.float32),
        (torch.bfloat16, torch.bfloat16),
        ("auto", None),
    ],
)
def test_parse_dtype(given, expected):
    assert parse_dtype(given) == expected


@pytest.mark.parametrize("bad", ["float16", "half", "", torch.float16, torch.int64])
def test_parse_dtype_names_the_accepted_values(bad):
    with pytest.raises(ValueError, match="float32"):
        parse_dtype(bad)


def test_explicit_dtypes_are_kept_whatever_the_hardware():
    assert resolve_dtype("float32", "cpu") == torch.float32
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    assert dtype_name(resolve_dtype("fp32")) == "float32"


def test_auto_on_cpu_follows_the_bf16_features():
    expected = torch.bfloat16 if cpu_bf16_features() else torch.float32
    assert resolve_dtype("auto", "cpu") == expected
    assert fast_bf16("cpu") == bool(cpu_bf16_features())
    assert not fast_bf16("meta")  # neither CUDA nor a CPU: float32


def test_cpuinfo_flags_are_parsed(tmp_path: Path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n\nprocessor\t: 1\n")
    assert precision._cpuinfo_features(info) == ("avx512_bf16",)
    info.write_text("flags\t\t: fpu avx2 amx_tile amx_bf16 avx512_bf16\n")
    assert precision._cpuinfo_features(info) == ("amx_bf16", "avx512_bf16")
    info.write_text("flags\t\t: fpu sse avx2 fma\n")
    assert precision._cpuinfo_features(info) == ()
    assert precision._cpuinfo_features(tmp_path / "absent") == ()


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="needs Linux /proc/cpuinfo")
def test_torch_and_cpuinfo_agree_on_this_cpu():
    assert cpu_bf16_features() == precision._cpuinfo_features(Path("/proc/cpuinfo"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_auto_on_cuda_is_bf16_from_ampere_on():
    major = torch.cuda.get_device_capability(0)[0]
    assert resolve_dtype("auto", "cuda:0") == (torch.bfloat16 if major >= 8 else torch.float32)


def test_training_precision_follows_the_hardware():
    from patchalign3d.precision import training_precision

    assert training_precision("cpu") == ("bf16-mixed" if cpu_bf16_features() else "32-true")
    if not torch.cuda.is_available():
        assert training_precision("gpu") == "32-true"
    with pytest.raises(ValueError, match="accelerator"):
        training_precision("tpu")


def test_demo_configs_resolve_precision_auto():
    from patchalign3d.lit.cli import cli_main
    from patchalign3d.precision import training_precision

    demo = Path(__file__).resolve().parents[1] / "patchalign3d" / "configs" / "demo"
    for args in (
        ["-c", str(demo / "stage1.yaml")],
        ["-c", str(demo / "stage2.yaml"), "--model.init_args.init_from", "null"],
    ):
        assert cli_main(args, run=False).trainer.precision == training_precision("cpu")
