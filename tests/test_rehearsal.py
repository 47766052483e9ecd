"""The rtx4060 rehearsal (finreason.rehearsal): its override lists keep the profile's kinds, and
`gpu_check.sh --cpu` runs it end to end, leaving what every step must leave."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import config
from finreason import configuration, rehearsal
from finreason.configuration import resolve_config
from helpers import PROJECT_ROOT


def _keys(tokens):
    return [token[2:].split("=", 1)[0] for token in tokens]


def test_the_rehearsal_keeps_every_kind_of_the_rtx4060_profile(tmp_path):
    profile = resolve_config(["--PROFILE=rtx4060"])
    assert rehearsal.KEPT == {key: getattr(profile, key) for key in rehearsal.KEPT}  # KEPT is the card's run
    cfg = resolve_config(rehearsal.overrides(tmp_path / "model", tmp_path / "out"))
    rehearsal.check_kinds(cfg)
    forced, scaled = _keys(rehearsal.CPU_FORCED), _keys(rehearsal.SCALED)
    assert not set(forced) & set(scaled) and not (set(forced) | set(scaled)) & set(rehearsal.KEPT)
    # every scaled row changes a size the profile sets (a row equal to the default would say nothing)
    assert all(getattr(cfg, key) != getattr(profile, key) for key in scaled)
    assert all(key in vars(config) for key in forced + scaled)


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--LOAD_IN_4BIT=false", "--FINETUNE=full"], "LOAD_IN_4BIT"),  # no 4-bit: not QLoRA any more
        (["--SFT_TARGET=program"], "SFT_TARGET"),  # program-only targets: the cpu profile's kind
        (["--RETRIEVER_TOP_K=3"], "RETRIEVER_TOP_K"),  # 3 facts are not 5 facts
        (["--NUM_GENERATIONS=2", "--GRPO_BATCH_SIZE=2"], "NUM_GENERATIONS"),  # smaller groups than the card's
        (["--GRADIENT_CHECKPOINTING=false"], "GRADIENT_CHECKPOINTING"),  # the card needs it to fit 8 GB
    ],
)
def test_an_override_that_changes_a_kind_is_refused(tmp_path, extra, named):
    cfg = resolve_config(rehearsal.overrides(tmp_path / "model", tmp_path / "out", extra))
    with pytest.raises(rehearsal.RehearsalError, match=named):
        rehearsal.check_kinds(cfg)


def test_the_rehearsal_help_names_its_lists(capsys):
    with pytest.raises(SystemExit) as done:
        rehearsal.main(["--help"])
    assert done.value.code == 0 and "--out" in capsys.readouterr().out
    assert configuration.config_tokens(rehearsal.CPU_FORCED + rehearsal.SCALED)[1] == []  # all --KEY=value


CHECKS = [
    "00 --probe measured SFT and GRPO steps",
    "03 wrote reasoning targets, retrieved top-5 evidence, the worked example",
    "04 trained an adapter on the 4-bit base",
    "04's model card says NF4 and LoRA",
    "05 continued the SFT adapter with GRPO",
    "02, 04 and 06 evaluated every stage with its own weights",
    "07 wrote the report with every stage",
    "08 merged folder is float16 without a quantisation config",
    "08 wrote model-f16.gguf",
    "08 wrote model-q8_0.gguf",
    "08 merged folder loads without bitsandbytes",
    "the app serves the GRPO adapter on the NF4 base",
    "the app serves the merged folder as an exported model",
    "merged folder = float32 base + adapter, merged, in float16 (every tensor equal)",
    "merged folder vs adapter on the float32 base: same greedy answers, logits within 0.002",
    "merged folder vs adapter on the NF4 base: logits within NF4's own error on the base",
]
STEPS = ["build tiny qwen2.5", "00 check env --probe", "03 format data", "02 zero-shot", "04 train SFT", "05 train GRPO",
         "06 evaluate GRPO", "07 analyze", "08 export", "checks (app loading, merged vs adapter)"]


@pytest.mark.slow
def test_gpu_check_cpu_runs_the_rtx4060_rehearsal(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(["bash", str(PROJECT_ROOT / "benchmarks" / "gpu_check.sh"), "--cpu", "--skip-tests", f"--OUTPUT_DIR={out}"],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    report = json.loads((out / "bench" / "gpu_check.json").read_text(encoding="utf-8"))
    assert report["mode"] == "cpu" and report["ok"] is True
    assert [row["name"] for row in report["rows"]] == ["rehearsal rtx4060", *(f"  {name}" for name in STEPS)]
    assert all(row["status"] == "ok" for row in report["rows"])
    assert "rtx4060 rehearsal" in done.stdout and f"{len(CHECKS)} of {len(CHECKS)} checks passed" in done.stdout

    folder = out / "bench" / "gpu_check" / "rehearsal"
    result = json.loads((folder / rehearsal.RESULT).read_text(encoding="utf-8"))
    assert [row["check"] for row in result["checks"]] == CHECKS and all(row["ok"] for row in result["checks"])
    assert result["kept"] == rehearsal.KEPT and result["cpu_forced"] == list(rehearsal.CPU_FORCED)
    # the files themselves, beside what the rehearsal's checks read
    outputs = folder / "outputs"
    assert "QLoRA (NF4 base)" in (outputs / "sft" / "adapter" / "README.md").read_text(encoding="utf-8")
    grpo = json.loads((outputs / "grpo" / "adapter" / "training_summary.json").read_text(encoding="utf-8"))
    sft = json.loads((outputs / "sft" / "adapter" / "training_summary.json").read_text(encoding="utf-8"))
    assert grpo["sft_weights_sha256"] == sft["weights_sha256"] and sft["model_info"]["quantization"] == "nf4"
    assert all((outputs / "eval" / f"{stage}.summary.json").is_file() for stage in ("zero_shot", "sft", "grpo"))
    assert (outputs / "report.md").is_file()
    assert "quantization_config" not in json.loads((outputs / "export" / "merged" / "config.json").read_text(encoding="utf-8"))
    assert not (folder / "model").exists()  # the random weights are removed, as the GPU run's are
    tolerance = result["checks"][-1]["found"]
    assert Path(result["model"]).name == "model" and tolerance["max_logit_difference"] <= tolerance["bound"]
