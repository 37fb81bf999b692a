"""benchmarks/bench_gpu.py end to end at tiny sizes on the CPU: every section runs and both reports are written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def test_tiny_cpu_run_writes_json_and_markdown(tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "bench_gpu.py"),
            "--tiny",
            "--device",
            "cpu",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "gpu_bench.json").read_text())
    assert result["device"] == "cpu" and result["sizes"]["arch"] == "tiny"
    assert {"matmul_fp32_tflops", "matmul_bf16_tflops"} <= set(result["roofline"])
    inference = {(r["batch"], r["dtype"]): r for r in result["inference"]}
    assert set(inference) == {(b, d) for b in (1, 4) for d in ("fp32", "bf16")}
    for r in inference.values():
        assert (
            r["network_clouds_per_s"] > 0
            and r["segment_clouds_per_s"] > 0
            and r["ratio_network_vs_roofline"] > 0
        )
        assert r["peak_mib_network"] is None  # memory is tracked on CUDA only
    assert [r["points"] for r in result["grouping"]] == [256, 2048] and all(
        r["ms"] > 0 for r in result["grouping"]
    )
    assert [r["dtype"] for r in result["teacher"]] == ["float32", "bfloat16"]
    assert all(r["images_per_s"] > 0 for r in result["teacher"])
    assert [(r["stage"], r["precision"]) for r in result["training"]] == [
        (1, "bf16-mixed"),
        (2, "bf16-mixed"),
    ]
    assert all(r["steps_per_s"] > 0 for r in result["training"])
    table = (out / "gpu_bench.md").read_text()
    assert (
        "/ roofline" in table
        and "| 4 | bf16 |" in table
        and "bf16-mixed" in table
        and "| 1 | 4 | bf16 |" not in table
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_no_cuda_is_a_clear_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_gpu.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "no CUDA device here" in proc.stderr and "Traceback" not in proc.stderr
