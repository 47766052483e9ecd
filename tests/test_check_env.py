"""00_check_env: runs here, writes its JSON, and fails loudly when something required is missing."""

from __future__ import annotations

import json

import pytest

from helpers import load_script


@pytest.fixture(scope="module")
def check_env():
    return load_script("00_check_env.py")


def test_main_passes_here_and_writes_json(tmp_path, check_env, capsys):
    assert check_env.main([f"--OUTPUT_DIR={tmp_path}", "--PROFILE=cpu"]) == 0
    saved = json.loads((tmp_path / "check_env.json").read_text())
    assert saved["ok"] is True
    assert saved["provenance"]["profile"] == "cpu"
    assert saved["packages"]["torch"]
    assert saved["memory_estimate_gb"]["peak"] > 0
    assert "memory estimate" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("importable", "works", "detail"),
    [
        (True, True, "NF4 matmul on cpu runs"),  # bitsandbytes installed: a real NF4 matmul runs here
        (False, False, "import failed"),  # bitsandbytes cannot be imported: reported, a warning for the cpu profile
    ],
)
def test_4bit_check(tmp_path, check_env, monkeypatch, capsys, importable, works, detail):
    import importlib.util
    import sys

    if importable and importlib.util.find_spec("bitsandbytes") is None:
        pytest.skip("bitsandbytes is not installed on this machine: there is no NF4 matmul to check")
    if not importable:
        monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    assert check_env.main([f"--OUTPUT_DIR={tmp_path}", "--PROFILE=cpu"]) == 0  # the cpu profile does not need 4-bit
    saved = json.loads((tmp_path / "check_env.json").read_text())
    assert saved["bnb_4bit"] is works
    assert detail in capsys.readouterr().out


@pytest.mark.parametrize(
    "requirement, expect_exit, message",
    [
        ("torch==2.13.0\n", 0, None),  # the installed pin: fine
        ("finreason-no-such-package==1.0  # simulated missing\n", 1, "finreason-no-such-package"),  # missing: fails, named
        ("numpy==0.0.1\n", 0, None),  # version drift only warns
    ],
)
def test_requirements_checked(tmp_path, check_env, capsys, requirement, expect_exit, message):
    pins = tmp_path / "requirements.txt"
    pins.write_text(requirement)
    code = check_env.main([f"--OUTPUT_DIR={tmp_path}", "--PROFILE=cpu", f"--requirements={pins}"])
    out = capsys.readouterr()
    assert code == expect_exit
    if message:
        assert message in out.out and "ENVIRONMENT NOT READY" in out.err


def test_bf16_requested_without_support_fails(tmp_path, check_env, monkeypatch, capsys):
    # a card without bf16 (T4) asked for bfloat16: the check names the constant to change
    monkeypatch.setattr(check_env, "_cpu_bf16_works", lambda torch: False)
    code = check_env.main([f"--OUTPUT_DIR={tmp_path}", "--PROFILE=cpu", "--COMPUTE_DTYPE=bfloat16"])
    assert code == 1
    assert "--COMPUTE_DTYPE=float16" in capsys.readouterr().out


@pytest.mark.parametrize(
    "overrides, fits_8gb",
    [
        ({}, True),  # the rtx4060 defaults are written for 8 GB
        ({"LOAD_IN_4BIT": False, "COMPUTE_DTYPE": "float32", "MAX_SEQ_LEN": 4096, "SFT_BATCH_SIZE": 8}, False),  # far too big
        ({"LOAD_IN_4BIT": False, "FINETUNE": "full", "COMPUTE_DTYPE": "float32"}, False),  # every 1.5B weight in fp32 + Adam
    ],
)
def test_memory_estimate(overrides, fits_8gb):
    from finreason import memory
    from finreason.configuration import resolve_config

    cfg = resolve_config(["--PROFILE=rtx4060"]).replace(**overrides)
    gb = memory.estimate_gb(cfg, memory.KNOWN_MODELS[cfg.MODEL_NAME])
    assert (gb["peak"] <= 8.0) == fits_8gb
    if not fits_8gb:
        assert "MAX_SEQ_LEN" in memory.advice(gb)


def test_torch_missing_fails_with_a_message(tmp_path, check_env, monkeypatch, capsys):
    # `import torch` failing (broken or absent install) is fatal and says what to do
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)
    code = check_env.main([f"--OUTPUT_DIR={tmp_path}", "--PROFILE=cpu"])
    out = capsys.readouterr()
    assert code == 1
    assert "cannot import torch" in out.out and "ENVIRONMENT NOT READY: torch" in out.err


@pytest.mark.parametrize(
    ("peaks", "setting", "precision", "shown"),
    [
        ({"float32": 2.09e11, "bfloat16": 9.29e11}, "auto", "bfloat16", "float32 209 GFLOP/s, bfloat16 929 GFLOP/s"),  # native bf16
        ({"float32": 2.09e11, "bfloat16": 0.5e11}, "auto", "float32", "bfloat16 50 GFLOP/s"),  # emulated bf16: slower
        ({"float32": 2.09e11, "bfloat16": None}, "auto", "float32", "bfloat16 has no matmul kernel here"),
        ({"float32": 2.09e11, "bfloat16": 9.29e11}, "float32", "float32", "(CPU_PRECISION=float32)"),  # asked for fp32
    ],
)
def test_probe_reports_the_matmul_peak_and_the_precision(check_env, monkeypatch, tmp_path, peaks, setting, precision, shown):
    import torch

    from finreason import throughput
    from finreason.configuration import resolve_config

    monkeypatch.setattr(throughput, "measured_peak", lambda name, device="cpu": peaks[name])
    report = check_env.Report()
    # an empty OUTPUT_DIR: no probe decision recorded, so auto goes by the matmul peaks
    check_env.check_matmul_peak(report, torch, resolve_config(["--PROFILE=cpu", f"--CPU_PRECISION={setting}", f"--OUTPUT_DIR={tmp_path}"]))
    assert report.values["training_precision"] == precision
    assert report.values["matmul_peak_gflops"] == {k: round(v / 1e9, 1) if v else None for k, v in peaks.items()}
    assert shown in report.rows[-1]["detail"] and f"training precision: {precision}" in report.rows[-1]["detail"]
