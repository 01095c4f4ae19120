"Contracts of the CLIP loss: agreement with MiniClip on the shipped mini CLIP, a tiny random CLIPModel folder, gradients, errors."
import json
import pytest, torch
import torch.nn.functional as F
from instant3d.conventions import config_to_dict, config_from_dict
from instant3d.clip_loss import ClipLossConfig, Clip, clip_loss, clip_rp
from instant3d.mini.clip import MiniClipConfig, build_mini_clip, load_mini_clip, shipped_mini_clip_dir
from instant3d.text import WeightsNotFoundError

needs_mini = pytest.mark.skipif(not (shipped_mini_clip_dir() / "clip").is_dir(), reason="shipped mini CLIP absent")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    "A tiny random CLIPModel + tokenizer written flat with save_pretrained."
    d = tmp_path_factory.mktemp("tiny_clip")
    model, tok = build_mini_clip(MiniClipConfig.tiny())
    model.save_pretrained(str(d)); tok.save_pretrained(str(d))
    return d


def test_config_round_trip_and_errors():
    for c in (ClipLossConfig.paper(), ClipLossConfig.official(), ClipLossConfig.mini(), ClipLossConfig(weight=0.0)):
        assert config_from_dict(ClipLossConfig, json.loads(json.dumps(config_to_dict(c)))) == c
    assert ClipLossConfig.paper().model == "openai/clip-vit-large-patch14" and ClipLossConfig.mini().model == "mini"
    for bad in (dict(weight=-0.1), dict(weight=float("inf")), dict(model="")):
        with pytest.raises(ValueError, match=next(iter(bad))): ClipLossConfig(**bad)


def test_formulas():
    e = F.normalize(torch.randn(5, 16), dim=-1)
    torch.testing.assert_close(clip_loss(e, e), torch.tensor(0.0))
    torch.testing.assert_close(clip_loss(e, -e), torch.tensor(2.0))
    torch.testing.assert_close(clip_rp(e, e, torch.arange(5), 0.0), torch.full((5,), 0.2))
    p = clip_rp(e, e, torch.arange(5), 100.0)
    torch.testing.assert_close(p, (100 * e @ e.T).softmax(-1).diagonal())
    with pytest.raises(ValueError): clip_loss(e, e[:3])
    with pytest.raises(ValueError): clip_rp(e, e, torch.tensor([0, 1, 2, 3, 5]), 1.0)


@needs_mini
def test_agrees_with_mini_clip():
    from instant3d.mini.world import WorldConfig, prompts
    from instant3d.mini.render import render_scenes
    from instant3d.cameras import sample_cameras
    clip, ref = Clip.from_pretrained("mini"), load_mini_clip()
    w = WorldConfig.mini(); ps = prompts(w); sel = ps[::300]
    img = render_scenes(sel, sample_cameras(w.camera, len(sel), torch.Generator().manual_seed(0)), cfg=w)["rgb"]
    torch.testing.assert_close(clip.encode_images(img), ref.encode_image(img))
    torch.testing.assert_close(clip.encode_texts(sel), ref.encode_text(sel)[1])
    assert clip.image_size == ref.cfg.image_size and clip.logit_scale == pytest.approx(ref.logit_scale)
    bank, true = clip.encode_texts(ps), torch.tensor([ps.index(p) for p in sel])
    with torch.no_grad():
        torch.testing.assert_close(clip_rp(clip.encode_images(img), bank, true, clip.logit_scale), ref.clip_rp(img, true, bank))


def test_tiny_folder_and_gradient(tiny_dir):
    clip = Clip.from_pretrained(tiny_dir, local_files_only=True)
    assert clip.image_size == 32 and clip.embed_dim == 16 and not any(p.requires_grad for p in clip.parameters())
    img = torch.rand(3, 3, 48, 48, requires_grad=True)
    emb = clip.encode_images(img)
    txt = clip.encode_texts(["a red sphere", "a blue cube", "a red cube"])
    assert emb.shape == (3, 16) and txt.shape == (3, 16)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3)); torch.testing.assert_close(txt.norm(dim=-1), torch.ones(3))
    clip_loss(emb, txt).backward()
    assert img.grad is not None and img.grad.abs().sum() > 0
    clip.train()
    assert not clip.training


def test_missing_weights(tmp_path, monkeypatch):
    with pytest.raises(WeightsNotFoundError, match="hf download"): Clip.from_pretrained(tmp_path)
    with pytest.raises(WeightsNotFoundError): Clip.from_pretrained(tmp_path / "nowhere")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError): Clip.from_pretrained("openai/clip-vit-large-patch14-not-cached")


@pytest.mark.parametrize("attention, dtype, grad, flash", [("auto", torch.bfloat16, True, False),
                                                           ("auto", torch.bfloat16, False, True),
                                                           ("auto", torch.float32, True, True),
                                                           ("default", torch.bfloat16, True, True),
                                                           ("math", torch.float32, True, False)])
def test_attention_kernel_of_encode_images(tiny_dir, attention, dtype, grad, flash):
    "The image tower runs under the kernel ClipLossConfig.attention asks for (math: flash switched off while it runs)."
    clip = Clip.from_pretrained(tiny_dir, local_files_only=True, dtype=dtype, attention=attention)
    seen, vm = [], clip.model.vision_model
    hook = vm.register_forward_pre_hook(lambda *_: seen.append(torch.backends.cuda.flash_sdp_enabled()))
    with torch.set_grad_enabled(grad): emb = clip.encode_images(torch.rand(2, 3, 32, 32, requires_grad=grad))
    hook.remove()
    assert seen == [flash] and emb.dtype == torch.float32 and torch.backends.cuda.flash_sdp_enabled()
    with pytest.raises(ValueError, match="expected one of"): Clip.from_pretrained(tiny_dir, local_files_only=True,
                                                                                  attention="fast")


def test_trainer_passes_attention_setting():
    "The training CLIP gets ClipLossConfig.attention (wiring from the config to Clip.encode_images)."
    from dataclasses import replace
    from instant3d.train import _load_clip
    from instant3d.train_config import train_preset
    cfg = train_preset("mini")
    for a in ("default", "math"):
        assert _load_clip(replace(cfg, clip=replace(cfg.clip, attention=a)), "cpu").attention == a
    with pytest.raises(ValueError, match="ClipLossConfig.attention"): ClipLossConfig(attention="fast")


@needs_mini
def test_math_kernel_gives_the_same_clip_loss_gradient():
    "The attention lever computes the same function: the CLIP loss's gradient on the renders, bf16 math kernel against flash."
    from instant3d.mini.world import WorldConfig, prompts
    from instant3d.mini.render import render_scenes
    from instant3d.cameras import sample_cameras
    w = WorldConfig.mini(); sel = prompts(w)[::400][:4]
    img = render_scenes(sel, sample_cameras(w.camera, len(sel), torch.Generator().manual_seed(1)), cfg=w)["rgb"]
    grads = {}
    for a in ("math", "default"):
        clip = Clip.from_pretrained("mini", dtype=torch.bfloat16, attention=a)
        x = img.clone().requires_grad_(True)
        clip_loss(clip.encode_images(x), clip.encode_texts(sel)).backward()
        grads[a] = x.grad.flatten()
    cos = F.cosine_similarity(grads["math"], grads["default"], dim=0)
    assert cos > 0.99, cos  # both bf16 kernels: about 0.9995 against float32 (Xeon with AMX)
    assert 0.9 < grads["math"].norm() / grads["default"].norm() < 1.1
