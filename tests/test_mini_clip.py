"Contracts of instant3d.mini.clip and instant3d.mini.clip_train: config round trip, save/load layouts, toy training and resume, the shipped weights."
import json, shutil, subprocess, sys, warnings
from dataclasses import replace
import pytest, torch
from instant3d.conventions import config_from_dict, config_to_dict
from instant3d.clip_loss import clip_preprocess, clip_rp
from instant3d.mini.clip import (MiniClip, MiniClipConfig, build_mini_clip, evaluate_ground_truth, load_mini_clip,
                                 save_mini_clip, shipped_mini_clip_dir)
from instant3d.mini.clip_train import contrastive_loss, train_mini_clip
from instant3d.text import TextEncoder
from instant3d.mini.world import WorldConfig, prompts

SHIPPED = shipped_mini_clip_dir()
needs_weights = pytest.mark.skipif(not (SHIPPED / "clip").is_dir(), reason="no shipped mini CLIP weights yet")

def test_fresh_import():
    subprocess.run([sys.executable, "-c", "import instant3d.mini.clip as m; m.MiniClipConfig.mini()"], check=True)

def test_config_round_trip_and_errors():
    for c in (MiniClipConfig.mini(), MiniClipConfig.tiny(), MiniClipConfig.paper()):
        assert config_from_dict(MiniClipConfig, json.loads(json.dumps(config_to_dict(c)))) == c
    for bad in (dict(lr=2.0), dict(batch_size=1), dict(patch_size=3), dict(stop_top1=1.5), dict(world=WorldConfig())):
        with pytest.raises(ValueError, match=next(iter(bad)) if "world" not in bad else "image_size"): MiniClipConfig(**bad)

def test_preprocess_resizes_and_normalises():
    x = torch.full((1, 3, 64, 64), 0.5)
    y = clip_preprocess(x, 32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert y.shape == (1, 3, 32, 32) and y.abs().max() < 1e-5
    with pytest.raises(ValueError): clip_preprocess(torch.rand(3, 32, 32))

def test_save_load_layouts(tmp_path):
    cfg = MiniClipConfig.tiny()
    clip = MiniClip(*build_mini_clip(cfg), cfg)
    save_mini_clip(clip.model, clip.tokenizer, cfg, tmp_path / "m", dtype=torch.float16)
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"clip", "text_encoder", "tokenizer", "mini_clip.json"}
    back, enc = MiniClip.from_pretrained(tmp_path / "m"), TextEncoder.from_pretrained(tmp_path / "m", local_files_only=True)
    ps = prompts(cfg.world)[:3]
    torch.testing.assert_close(enc.encode(ps).tokens, back.encode_text(ps)[0])
    torch.testing.assert_close(back.encode_text(ps)[0], clip.encode_text(ps)[0], atol=5e-3, rtol=0)
    with pytest.raises(FileNotFoundError): MiniClip.from_pretrained(tmp_path / "missing")

def test_toy_training_resume_and_config_guard(tmp_path):
    cfg = replace(MiniClipConfig.tiny(), steps=6, checkpoint_every=3, eval_every=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = train_mini_clip(cfg, tmp_path / "a", progress=False)
        (tmp_path / "b").mkdir()
        for f in ("render_cache.pt", "val_cache.pt"): shutil.copy(tmp_path / "a" / f, tmp_path / "b" / f)
        train_mini_clip(cfg, tmp_path / "b", progress=False, stop_after=3)
        (tmp_path / "b" / "checkpoint").rename(tmp_path / "b" / ".checkpoint.old")  # killed in the middle of a checkpoint swap
        from instant3d.mini.clip_train import _prepare
        assert _prepare(cfg, tmp_path / "b", resume=True, progress=False)[3] == 3  # the swap is finished, the run goes on at 3
        b = train_mini_clip(cfg, tmp_path / "b", progress=False, resume=True)
        with pytest.raises(ValueError, match="differs"): train_mini_clip(replace(cfg, lr=2e-3), tmp_path / "b", resume=True, progress=False)
    for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()): torch.testing.assert_close(x, y)
    assert (tmp_path / "a" / "log.csv").read_text() .count("\n") == 7
    m = evaluate_ground_truth(a, seed=11, n_views=1)
    assert 0 <= m["gt_clip_rp"] <= 1 and 0 <= m["gt_top1"] <= 1

def test_clip_rp_goes_through_the_core_implementation():
    "MiniClip.clip_rp is instant3d.clip_loss.clip_rp on its embeddings, and the softmax of prompt_probs read at the true prompt."
    cfg = MiniClipConfig.tiny()
    clip, ps = MiniClip(*build_mini_clip(cfg), cfg), prompts(cfg.world)[:5]
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        rp = clip.clip_rp(x, [0, 2, 4], ps)
        torch.testing.assert_close(rp, clip_rp(clip.encode_image(x), clip.text_bank(ps), [0, 2, 4], clip.logit_scale))
        torch.testing.assert_close(rp, clip.prompt_probs(x, ps)[torch.arange(3), torch.tensor([0, 2, 4])])
    with pytest.raises(ValueError, match="true_prompt_idx"): clip.clip_rp(x, [0, 2, 9], ps)


def test_contrastive_loss_matches_transformers():
    cfg = MiniClipConfig.tiny()
    clip, ps, x = MiniClip(*build_mini_clip(cfg), cfg), prompts(cfg.world)[:4], torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        ref = clip.model(input_ids=clip.tokenize(ps), pixel_values=clip_preprocess(x), return_loss=True).loss
        loss, acc = contrastive_loss(clip.encode_image(x), clip.encode_text(ps)[1], clip.model.logit_scale)
    torch.testing.assert_close(loss, ref)
    assert 0 <= acc <= 1


@needs_weights
def test_shipped_weights_contract():
    clip = load_mini_clip()
    tokens, pooled = clip.encode_text(["a red cube, front view", "a blue sphere"])
    assert tokens.shape == (2, 24, 64) and pooled.shape == (2, clip.cfg.projection_dim)
    enc = TextEncoder.from_pretrained(SHIPPED, local_files_only=True)
    assert enc.max_length == 24 and enc.token_dim == 64
    torch.testing.assert_close(enc.encode(["a red cube, front view"]).tokens, tokens[:1])
    metrics = json.loads((SHIPPED / "metrics.json").read_text())
    assert metrics["gt_clip_rp"] >= 0.8 and metrics["gt_top1"] >= 0.9
    assert sum(f.stat().st_size for f in SHIPPED.rglob("*") if f.is_file()) < 8 * 2**20

@needs_weights
@pytest.mark.slow
def test_shipped_weights_pass_the_bar():
    m = evaluate_ground_truth(load_mini_clip(), seed=1234, n_views=4)
    assert m["gt_clip_rp"] >= 0.8 and m["gt_top1"] >= 0.9
