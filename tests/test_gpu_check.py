"""`make gpu-check` (benchmarks/gpu_check.py) in its tiny CPU mode, end to end, and its published configs."""
import json, subprocess, sys
from pathlib import Path
import pytest
import torch
from conftest import ENV

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check as G  # noqa: E402


def test_published_configs_build_the_published_models():
    "Random-weight models from the JSON configs have the parameter counts of the released checkpoints."
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModel
    c = G.published("clip_vit_l14", False)
    with torch.device("meta"):
        models = [UNet2DConditionModel(**G.published("sd21_base_unet", False)),
                  AutoencoderKL(**G.published("sd21_base_vae", False)),
                  CLIPTextModel(CLIPTextConfig(**G.published("sd21_base_text_encoder", False))),
                  CLIPModel(CLIPConfig(text_config=c["text_config"], vision_config=c["vision_config"],
                                       projection_dim=c["projection_dim"]))]
    assert [G.n_params(m) for m in models] == [865_910_724, 83_653_863, 340_387_840, 427_616_513]
    assert G.generator_config(False).preset == "official"


def test_tiny_mode_runs_end_to_end(tmp_path):
    out = tmp_path / "gpu_check.json"
    md_before = (ROOT / "BENCHMARKS.md").read_text()
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--tiny", "--device", "cpu",
                        "--out", str(out)], capture_output=True, text=True, env=dict(ENV, OMP_NUM_THREADS="2"),
                       timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["tiny"] and r["device"] == "cpu" and r["cuda_tests"]["status"].startswith("skipped")
    assert r["generator"]["forward_fp32"]["median_s"] > 0 and r["generator"]["render_fp32"]["median_s"] > 0
    t = r["training"]
    ok = [b for b in t["batches"] if b["status"] == "ok"]
    assert [b["batch"] for b in ok] == [1, 2] and all(b["views_per_s"] > 0 for b in ok)
    assert t["largest_batch"] == 2 and t["perp_neg"] == "adaptive" and t["clip_weight"] > 0
    assert t["paper_views_per_s_per_a100"] == pytest.approx(16.7, abs=0.1)
    assert (ROOT / "BENCHMARKS.md").read_text() == md_before  # tiny runs never rewrite BENCHMARKS.md
    md = G.markdown(r)
    assert md.startswith("<!-- gpu-check start -->") and md.endswith("<!-- gpu-check end -->") and "| 2 |" in md


def test_full_mode_needs_a_gpu():
    if torch.cuda.is_available(): pytest.skip("a GPU is present")
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu"],
                       capture_output=True, text=True, env=ENV)
    assert p.returncode != 0 and "needs a CUDA GPU; use --tiny" in p.stderr
