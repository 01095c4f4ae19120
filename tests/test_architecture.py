"Architecture contracts: released parameter counts (meta device), mini shapes and gradient coverage, input/config errors."
from dataclasses import replace
import json
import pytest
import torch
from instant3d.conventions import config_from_dict, config_to_dict
from instant3d.decoder import DecoderConfig, TriplaneDecoder
from instant3d.style import StyleBranch, StyleConfig, sample_style_noise
from instant3d.token_to_plane import LearnedConstantBase, TokenToPlane, TokenToPlaneConfig, count_parameters

PRESETS = ("paper", "official", "mini")


def build(preset, device=None):
    with torch.device(device or "cpu"):
        return (TokenToPlane(getattr(TokenToPlaneConfig, preset)()), StyleBranch(getattr(StyleConfig, preset)()),
                TriplaneDecoder(getattr(DecoderConfig, preset)()))


def test_official_parameter_counts_on_meta():
    t2p, style, dec = build("official", "meta")
    counts = [count_parameters(m) for m in (t2p, style, dec)]
    assert counts == [121_722_944, 11_959_104, 136_085_056]
    assert sum(counts) + 2_372 == 269_769_476  # + the 32-64-4 field MLP of the released model
    assert count_parameters(dec.style_mlp) == 594_560  # the style mapping MLP is counted in the decoder, as released


def test_official_layout_blocks():
    with torch.device("meta"): dec = TriplaneDecoder(DecoderConfig.official())
    kinds = [type(m).__name__ for m in dec.modules()]
    assert (kinds.count("ResnetBlockCondNorm2D"), kinds.count("AdaGroupNorm"), kinds.count("CrossAttnTransformer2D")) == (80, 160, 40)


@pytest.mark.parametrize("preset", ["paper", "official"])
def test_full_size_shapes_on_meta(preset):
    t2p, style, dec = build(preset, "meta")
    tok = torch.zeros(2, 77, 1024, device="meta")
    base, s = t2p(tok), style(tok)
    c = dec.config
    assert base.shape == (2, c.in_channels, c.base_res, c.base_res) and s.shape == (2, 1536)
    assert dec(base, tok, s).shape == (2, 3, 32, 256, 256)


@pytest.mark.parametrize("preset", PRESETS)
def test_configs_round_trip_and_interfaces_agree(preset):
    t, s, d = (getattr(C, preset)() for C in (TokenToPlaneConfig, StyleConfig, DecoderConfig))
    for c in (t, s, d): assert config_from_dict(type(c), json.loads(json.dumps(config_to_dict(c)))) == c
    assert (t.base_channels, t.base_res, t.token_dim, s.out_dim) == (d.in_channels, d.base_res, d.cross_attention_dim, d.style_in_dim)
    assert (s.token_dim, s.n_tokens) == (t.token_dim, t.n_tokens)


def test_mini_shapes_and_gradient_coverage():
    torch.manual_seed(0)
    t2p, style, dec = build("mini")
    tok = torch.randn(8, 24, 64)
    tp = dec(t2p(tok), tok, style(tok, generator=torch.Generator().manual_seed(0)))
    assert tp.shape == (8, 3, 16, 32, 32)
    tp.square().mean().backward()
    for name, m in (("token_to_plane", t2p), ("style", style), ("decoder", dec)):
        bad = [n for n, p in m.named_parameters() if p.grad is None or p.grad.abs().sum() == 0 or not p.grad.isfinite().all()]
        assert not bad, (name, bad)


def test_mini_paper_norm_runs_and_keeps_count():
    torch.manual_seed(0)
    cfg = replace(DecoderConfig.mini(), norm="adain")
    dec = TriplaneDecoder(cfg)
    assert count_parameters(dec) == count_parameters(TriplaneDecoder(DecoderConfig.mini()))
    out = dec(torch.randn(2, 64, 4, 4), torch.randn(2, 24, 64), torch.randn(2, 128))
    assert out.shape == (2, 3, 16, 32, 32) and out.isfinite().all()


def test_style_noise_is_seeded():
    torch.manual_seed(0)
    sb, tok = StyleBranch(StyleConfig.mini()), torch.randn(3, 24, 64)
    g = lambda s: torch.Generator().manual_seed(s)
    with torch.no_grad():
        a, b, c = sb(tok, generator=g(5)), sb(tok, generator=g(5)), sb(tok, generator=g(6))
    torch.testing.assert_close(a, b)
    assert (a[:, 64:] - c[:, 64:]).abs().min() > 0
    torch.testing.assert_close(a[:, :64], c[:, :64])
    torch.testing.assert_close(sample_style_noise(3, 64, g(5)), a[:, 64:])


def test_ablation_flags():
    tok = torch.randn(2, 24, 64)
    s = StyleConfig.mini()
    nn_out = StyleBranch(replace(s, use_noise=False))(tok, noise=torch.randn(2, 64))
    assert nn_out.shape == (2, 128) and (nn_out[:, 64:] == 0).all()
    no_text = StyleBranch(replace(s, use_text=False))
    assert count_parameters(no_text) == 0 and (no_text(tok)[:, :64] == 0).all()
    with torch.device("meta"):
        full = count_parameters(TriplaneDecoder(DecoderConfig.official()))
        no_x = count_parameters(TriplaneDecoder(replace(DecoderConfig.official(), use_cross_attention=False)))
        const = count_parameters(LearnedConstantBase(TokenToPlaneConfig.official()))
    assert no_x < full and const == 512 * 4 * 4
    dec = TriplaneDecoder(replace(DecoderConfig.mini(), use_cross_attention=False))
    base, st = torch.randn(2, 64, 4, 4), torch.randn(2, 128)
    with torch.no_grad(): torch.testing.assert_close(dec(base, tok, st), dec(base, None, st))
    c = LearnedConstantBase(TokenToPlaneConfig.mini())(tok)
    assert c.shape == (2, 64, 4, 4) and torch.equal(c[0], c[1])


@pytest.mark.parametrize("bad", [dict(attention="cosine"), dict(heads=0), dict(base_res=2.5), dict(equalized=1)])
def test_token_to_plane_config_errors(bad):
    with pytest.raises(ValueError): TokenToPlaneConfig(**bad)


@pytest.mark.parametrize("bad", [dict(norm="batch"), dict(stages=()), dict(stages=((330, 10, 20, 8),)), dict(mid_heads=-1),
                                 dict(out_norm_groups=3), dict(use_cross_attention=None)])
def test_decoder_config_errors(bad):
    with pytest.raises(ValueError): DecoderConfig(**bad)


def test_input_shape_errors():
    t2p, style, dec = build("mini")
    tok = torch.randn(2, 24, 64)
    with pytest.raises(ValueError, match=r"\[B, 24, 64\]"): t2p(torch.randn(2, 77, 1024))
    with pytest.raises(ValueError, match="noise"): style(tok, noise=torch.randn(2, 3))
    with pytest.raises(ValueError, match="base"): dec(torch.randn(2, 64, 8, 8), tok, torch.randn(2, 128))
    with pytest.raises(ValueError, match="style"): dec(torch.randn(2, 64, 4, 4), tok, torch.randn(2, 64))
    with pytest.raises(ValueError, match="tokens"): dec(torch.randn(2, 64, 4, 4), None, torch.randn(2, 128))
    with pytest.raises(ValueError): StyleConfig(noise_dim=0)
