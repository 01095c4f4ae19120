"Perp-Neg and adaptive Perp-Neg (instant3d.perp_neg): oracles from the reference implementations, the cache, configs."
import math
import pytest, torch
from instant3d.cameras import VIEW_NAMES
from instant3d.conventions import config_from_dict, config_to_dict
from instant3d.perp_neg import (NEG_VIEWS, PerpNegCache, PerpNegConfig, adaptive_scale, adaptive_w_neg, consistency_score,
                                perp_component, perp_neg_combine, perp_neg_eps, view_mix)

def gen(seed): return torch.Generator().manual_seed(seed)

# oracles: scalar ports of the reference code, one azimuth at a time

def sd_oracle(az, negative_w=2.0, front_decay=2.0, side_decay=10.0):
    "stable-dreamfusion get_pos_neg_text_embeddings: positive {view: r}, negatives {view: weight >= 0}."
    if -90 <= az < 90:
        r = 1 - abs(az) / 90
        pos = {"front": r, "side": 1 - r}
        neg = {"front": 0.0 if r > 0.8 else math.exp(-r * front_decay) * negative_w,
               "side": 0.0 if r < 0.2 else math.exp(-(1 - r) * side_decay) * negative_w}
    else:
        r = 1 - (abs(az) - 90) / 90
        pos = {"side": r, "back": 1 - r}
        neg = {"front": negative_w, "side": 0.0 if r > 0.8 else math.exp(-r * side_decay) * negative_w / 2}
    return pos, neg

def ts_oracle(az):
    "threestudio get_text_embeddings_perp_neg (non-overhead), default perp_neg_f_* values."
    f = lambda a, b, c, r: a * math.exp(-b * r) + c
    if abs(az) < 90:
        r = 1 - abs(az) / 90
        return {"front": r, "side": 1 - r}, {"front": f(4, 0.5, -2.426, r), "side": f(4, 0.5, -2.426, 1 - r)}
    r = 2 - abs(az) / 90
    return {"side": r, "back": 1 - r}, {"side": f(1, 0.5, -0.606, r), "front": f(1, 0.5, 0.967, r)}

def perp_neg_loop(eu, ec, w, s):
    "stable-dreamfusion weighted_perpendicular_aggregator, sample by sample, with the sign of weights flipped (ours are >= 0)."
    out = []
    for i in range(len(eu)):
        e = [(ec[i, k] - eu[i]).double() for k in range(ec.shape[1])]
        acc = e[0].clone()
        for k in range(1, len(e)):
            perp = e[k] - (e[k] * e[0]).sum() / max(e[0].norm() ** 2, 1e-12) * e[0]
            acc = acc - w[i, k - 1].double() * perp
        out.append(eu[i].double() + s * acc)
    return torch.stack(out).float()

AZ = [-179.0, -150.0, -120.0, -95.0, -60.0, -30.0, -5.0, 0.0, 12.0, 45.0, 72.0, 89.0, 91.0, 135.0, 170.0, 179.5]

# view_mix

@pytest.mark.parametrize("reference,w_neg,oracle", [("stable-dreamfusion", 2.0, sd_oracle), ("threestudio", 1.967, ts_oracle)])
def test_view_mix_matches_reference(reference, w_neg, oracle):
    cfg = PerpNegConfig(reference=reference, w_neg=w_neg, mode="fixed")
    mix, w = view_mix(torch.tensor(AZ), torch.zeros(len(AZ)), cfg)
    assert mix.shape == (len(AZ), 3, 4) and w.shape == (len(AZ), 2)
    torch.testing.assert_close(mix.sum(-1), torch.ones(len(AZ), 3))
    for i, az in enumerate(AZ):
        pos, neg = oracle(az)
        want = torch.tensor([pos.get(v, 0.0) for v in VIEW_NAMES])
        torch.testing.assert_close(mix[i, 0], want, atol=1e-5, rtol=0)
        torch.testing.assert_close(w[i], torch.tensor([neg[v] for v in NEG_VIEWS]), atol=2e-4, rtol=1e-4)
        for k, v in enumerate(NEG_VIEWS, start=1): assert mix[i, k].tolist() == [float(u == v) for u in VIEW_NAMES]
    assert (w >= 0).all()

def test_view_mix_special_views_and_off_mode():
    cfg = PerpNegConfig()
    mix, w = view_mix(torch.tensor([0.0, 180.0, 180.0, -40.0]), torch.tensor([0.0, 10.0, 60.0, 75.0]), cfg)
    assert mix[0, 0].tolist() == [1, 0, 0, 0] and w[0, 0] == 0  # front: no front negative
    assert mix[1, 0].tolist() == [0, 0, 1, 0] and w[1, NEG_VIEWS.index("front")] == cfg.w_neg  # back: front negated at w_neg
    assert mix[2, 0].tolist() == [0, 0, 0, 1] and mix[3, 0].tolist() == [0, 0, 0, 1] and (w[2:] == 0).all()  # overhead at >= 60
    m, w0 = view_mix(torch.tensor([10.0, -60.0, 150.0, 0.0]), torch.tensor([0.0, 0.0, 0.0, 61.0]), PerpNegConfig(mode="off"))
    assert m.shape == (4, 1, 4) and w0.shape == (4, 0) and m[:, 0].argmax(-1).tolist() == [0, 1, 2, 3]
    torch.testing.assert_close(m.sum(-1), torch.ones(4, 1))

def test_view_mix_scale_and_errors():
    cfg = PerpNegConfig()
    az, el = torch.tensor([180.0, 30.0]), torch.zeros(2)
    _, w1 = view_mix(az, el, cfg)
    _, w2 = view_mix(az, el, cfg, w_scale=torch.tensor([0.5, 2.0]))
    torch.testing.assert_close(w2, w1 * torch.tensor([[0.5], [2.0]]))
    torch.testing.assert_close(view_mix(az, el, cfg, w_scale=3.0)[1], 3 * w1)
    for kw in (dict(w_scale=torch.tensor([-1.0, 1.0])), dict(w_scale=float("nan"))):
        with pytest.raises(ValueError, match="w_scale"): view_mix(az, el, cfg, **kw)
    with pytest.raises(ValueError, match=r"\[B\]"): view_mix(torch.zeros(2, 2), torch.zeros(2, 2), cfg)
    with pytest.raises(ValueError, match=r"\[B\]"): view_mix(torch.zeros(3), torch.zeros(2), cfg)
    with pytest.raises(ValueError, match="finite"): view_mix(torch.tensor([float("inf")]), torch.zeros(1), cfg)

# perpendicular combination

def test_perp_component_orthogonal_and_reconstructs():
    a, b = torch.randn(7, 4, 6, 6, generator=gen(0)), torch.randn(7, 4, 6, 6, generator=gen(1))
    p = perp_component(a, b)
    torch.testing.assert_close((p * b).sum((1, 2, 3)), torch.zeros(7), atol=1e-4, rtol=0)
    coef = (a * b).sum((1, 2, 3), keepdim=True) / (b * b).sum((1, 2, 3), keepdim=True)
    torch.testing.assert_close(p + coef * b, a, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(perp_component(a, torch.zeros_like(b)), a)
    pb = perp_component(a[:, None].expand(7, 3, 4, 6, 6), b[:, None])  # broadcast over negatives
    torch.testing.assert_close(pb[:, 1], p)
    assert perp_component(a.half(), b.half()).dtype == torch.float16
    with pytest.raises(ValueError): perp_component(a, b[..., :5])

@pytest.mark.parametrize("K", [1, 2, 3, 5])
def test_perp_neg_eps_matches_loop(K):
    g = gen(K)
    eu, ec = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, K, 3, 8, 8, generator=g)
    w = torch.rand(4, K - 1, generator=g) * 4
    torch.testing.assert_close(perp_neg_eps(eu, ec, w, 50.0), perp_neg_loop(eu, ec, w, 50.0), atol=2e-4, rtol=1e-5)
    torch.testing.assert_close(perp_neg_combine(w, 50.0)(eu, ec), perp_neg_eps(eu, ec, w, 50.0))

def test_perp_neg_eps_reduces_to_cfg():
    g = gen(3)
    eu, ec = torch.randn(5, 4, 8, 8, generator=g), torch.randn(5, 3, 4, 8, 8, generator=g)
    cfg_eps = eu + 7.5 * (ec[:, 0] - eu)
    torch.testing.assert_close(perp_neg_eps(eu, ec[:, :1], torch.zeros(5, 0), 7.5), cfg_eps)
    torch.testing.assert_close(perp_neg_eps(eu, ec, torch.zeros(5, 2), 7.5), cfg_eps)
    par = ec.clone(); par[:, 1:] = eu[:, None] - 3.0 * (ec[:, :1] - eu[:, None])  # negatives along e_pos: projected away
    torch.testing.assert_close(perp_neg_eps(eu, par, torch.rand(5, 2, generator=g), 7.5), cfg_eps, atol=1e-4, rtol=1e-5)

def test_perp_neg_eps_pushes_away_and_validates():
    eu = torch.zeros(1, 1, 1, 2)
    ec = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 2, 1, 1, 2)  # e_pos = x, e_neg = y (already perpendicular)
    out = perp_neg_eps(eu, ec, torch.tensor([[2.0]]), 10.0)
    torch.testing.assert_close(out.view(2), torch.tensor([10.0, -20.0]))  # s (e_pos - w e_neg): s multiplies w
    eu, ec = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 3, 4, 4)
    with pytest.raises(ValueError, match=">= 0"): perp_neg_eps(eu, ec, -torch.ones(2, 2), 5.0)
    with pytest.raises(ValueError, match=r"\[2, 2\]"): perp_neg_eps(eu, ec, torch.ones(2, 1), 5.0)
    with pytest.raises(ValueError): perp_neg_eps(eu, ec[:, 0], torch.ones(2, 2), 5.0)

# adaptive Perp-Neg

def test_consistency_score_eq11():
    f = torch.randn(3, 8, generator=gen(4))
    z, opp = torch.zeros(3), torch.full((3,), 180.0)
    torch.testing.assert_close(consistency_score(opp, z, f, 5 * f), torch.ones(3))  # [1 - cos 180][1 + 1] / 4 = 1
    torch.testing.assert_close(consistency_score(z, z, f, f), torch.zeros(3))
    torch.testing.assert_close(consistency_score(torch.full((3,), 60.0), z, f, f), torch.full((3,), 0.5 * (1 - 0.5) * 2 / 2))
    g = torch.randn(3, 8, generator=gen(5))
    cos = torch.nn.functional.cosine_similarity(f, g, dim=-1)
    az, prev = torch.tensor([10.0, 120.0, -170.0]), torch.tensor([-100.0, 0.0, 170.0])
    want = (1 - torch.cos(torch.deg2rad(az - prev))) * (1 + cos) / 4
    torch.testing.assert_close(consistency_score(az, prev, f, g), want)
    want_floor = (1 - torch.cos(torch.deg2rad(az - prev))) / 2 * ((cos - 0.5) / 0.5).clamp_min(0)
    torch.testing.assert_close(consistency_score(az, prev, f, g, sim_floor=0.5), want_floor)
    with pytest.raises(ValueError): consistency_score(az, prev, f, g, sim_floor=1.0)

def test_cache_consistency_update_and_duplicates():
    f = torch.nn.functional.normalize(torch.randn(4, 8, generator=gen(6)), dim=-1)
    cache = PerpNegCache(10, 8)
    torch.testing.assert_close(cache.consistency([1, 2], f[:2], [180.0, 90.0]), torch.zeros(2))  # empty
    cache.update(torch.tensor([3, 7, 3]), torch.stack([f[0], f[1], f[2]]) * 4, torch.tensor([0.0, 45.0, 30.0]))
    assert cache.filled.nonzero().view(-1).tolist() == [3, 7]
    torch.testing.assert_close(cache.features[3], f[2])  # the last of the two rows of prompt 3, normalised
    torch.testing.assert_close(cache.azimuth_deg[3], torch.tensor(30.0))
    c = cache.consistency(torch.tensor([3, 7, 0]), torch.stack([f[2], f[1], f[3]]), torch.tensor([210.0, 225.0, 180.0]))
    torch.testing.assert_close(c, torch.tensor([1.0, 1.0, 0.0]))
    f_req = f[:1].clone().requires_grad_(True)
    cache.update([5], f_req, [0.0])
    assert not cache.features.requires_grad and not cache.consistency([5], f_req, [90.0]).requires_grad
    for bad in (lambda: cache.consistency([10], f[:1], [0.0]), lambda: cache.consistency([-1], f[:1], [0.0]),
                lambda: cache.update([1, 2], f[:1], [0.0, 0.0]), lambda: cache.update([1], f[:1, :4], [0.0]),
                lambda: cache.consistency([1.5], f[:1], [0.0]), lambda: PerpNegCache(4, 0), lambda: PerpNegCache(4, 8, sim_floor=2.0)):
        with pytest.raises(ValueError): bad()

def test_cache_state_round_trip(tmp_path):
    from safetensors.torch import load_file, save_file
    cache = PerpNegCache(6, 5, sim_floor=0.8)
    cache.update([0, 4], torch.randn(2, 5, generator=gen(7)), [12.0, -150.0])
    save_file(cache.state_dict(), str(tmp_path / "cache.safetensors"))
    other = PerpNegCache(6, 5, sim_floor=0.8)
    other.load_state_dict(load_file(str(tmp_path / "cache.safetensors")))
    for k, v in cache.state_dict().items(): assert torch.equal(v, other.state_dict()[k]), k
    q = torch.randn(3, 5, generator=gen(8))
    torch.testing.assert_close(other.consistency([0, 4, 1], q, [170.0, 20.0, 0.0]), cache.consistency([0, 4, 1], q, [170.0, 20.0, 0.0]))
    sd = cache.state_dict(); sd["features"] += 1
    assert not torch.equal(sd["features"], cache.features)  # a copy, not a view
    with pytest.raises(ValueError): PerpNegCache(7, 5).load_state_dict(cache.state_dict())
    with pytest.raises(ValueError): other.load_state_dict({k: v for k, v in cache.state_dict().items() if k != "filled"})

@pytest.mark.parametrize("cfg", [PerpNegConfig(), PerpNegConfig.mini(), PerpNegConfig(reference="threestudio", w_neg=1.5)])
def test_adaptive_scale_sets_back_view_strength(cfg):
    C = torch.tensor([0.0, 0.3, 1.0])
    torch.testing.assert_close(adaptive_w_neg(C, cfg), cfg.w_min + C * cfg.dw)
    _, w = view_mix(torch.full((3,), 180.0), torch.zeros(3), cfg, w_scale=adaptive_scale(C, cfg))
    torch.testing.assert_close(w[:, NEG_VIEWS.index("front")], adaptive_w_neg(C, cfg))

# config

def test_config_presets_round_trip_and_errors():
    for c in (PerpNegConfig(), PerpNegConfig.paper(), PerpNegConfig.official(), PerpNegConfig.mini()):
        assert config_from_dict(PerpNegConfig, config_to_dict(c)) == c
    assert PerpNegConfig.paper() == PerpNegConfig() and PerpNegConfig().mode == "adaptive" and PerpNegConfig().sim_floor == -1.0
    assert PerpNegConfig.official().mode == "fixed" and PerpNegConfig.official().w_neg == 2.0
    m = PerpNegConfig.mini()
    assert (m.mode, m.w_min, m.dw, m.sim_floor) == ("adaptive", 1.0, 3.0, 0.8)
    for bad, field in ((dict(mode="always"), "mode"), (dict(reference="x"), "reference"), (dict(w_neg=-2.0), "w_neg"),
                       (dict(front_decay=0.0), "front_decay"), (dict(w_min=-1.0), "w_min"), (dict(dw=float("inf")), "dw"),
                       (dict(sim_floor=-1.5), "sim_floor"), (dict(overhead_elevation_deg=0.0), "overhead_elevation_deg"),
                       (dict(front_half_width_deg=100.0), "front_half_width_deg"), (dict(w_neg=True), "w_neg")):
        with pytest.raises(ValueError, match=field): PerpNegConfig(**bad)
