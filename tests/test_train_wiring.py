"""Wiring of one training step: each part must reach the next, not only work alone.

One step of the tiny mini-world trainer runs with spies on what the step calls (the field's albedo activation, the
adaptive Perp-Neg cache, the teacher's SDS call, the optimiser), and the tests check the values that were passed:
- the scheduled alpha of the scaled-sigmoid reaches the renderer (paper Eq. 9);
- the consistency C of adaptive Perp-Neg is read against the previous render, before the cache update (paper Eq. 12);
- the adaptive w_neg = w_min + C dw (paper Eq. 11) is the weight the Perp-Neg combination uses (paper Eq. 10);
- lambda_sds and lambda_clip scale their terms in the logged total and in the gradient (paper Sec. 3.5).
"""
from dataclasses import replace
import pytest, torch
import torch.nn.functional as F
from instant3d.train_config import tiny_train_config
from instant3d.train import Trainer, _load_guidance, _load_clip
from instant3d.text import TextEncoder
from instant3d.perp_neg import adaptive_scale, adaptive_w_neg, consistency_score, perp_neg_eps, view_mix

STEP = 2  # inside the alpha annealing of a 10-step run: alpha_at(2) = 0.7, neither the start nor the end
LAMBDA_SDS, LAMBDA_CLIP = 0.5, 3.0  # neither 0 nor 1, so a dropped weight changes the result


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    "The tiny config and its loaded teacher, CLIP and text encoder, shared by every trainer of this module."
    cfg = tiny_train_config(tmp_path_factory.mktemp("tiny") / "teacher", steps=10, batch_size=2)
    cfg = replace(cfg, perp_neg=replace(cfg.perp_neg, sim_floor=-1.0))  # paper Eq. 12 exactly: C is never clamped to 0
    return cfg, _load_guidance(cfg, "cpu"), _load_clip(cfg, "cpu"), TextEncoder.from_config(cfg.generator.text)


def _trainer(models, out, lambda_sds=LAMBDA_SDS, lambda_clip=LAMBDA_CLIP, bank=None) -> Trainer:
    "A trainer at step STEP whose cache holds a seeded 'previous render' (feature, azimuth) for every prompt."
    cfg, guidance, clip, gen_text = models
    cfg = replace(cfg, lambda_sds=lambda_sds, clip=replace(cfg.clip, weight=lambda_clip))
    t = Trainer(cfg, out, guidance=guidance, clip=clip, gen_text=gen_text)
    if bank is not None: t.bank = bank  # the same prompts and encoders: reuse the embeddings already computed
    g, n = torch.Generator().manual_seed(123), t.cache.n_prompts
    t.cache.update(torch.arange(n), torch.randn(n, t.cache.feature_dim, generator=g), torch.rand(n, generator=g) * 360)
    t.step = STEP
    return t


def _spied_step(t: Trainer) -> dict:
    "Run one `train_step` of `t` with spies; returns what each spied call received and returned."
    rec = dict(order=[], alpha=[], cache_before=t.cache.state_dict())
    real_activate, real_ddp = t.model.field.activate, t.ddp
    real_consistency, real_update, real_sds = t.cache.consistency, t.cache.update, t.guidance.sds

    def activate(sigma_raw, logits, alpha=1.0):  # where the scaled-sigmoid reads alpha
        rec["alpha"].append(alpha); return real_activate(sigma_raw, logits, alpha)
    def ddp(tokens, cams, **kw):
        rec["cams"] = cams; return real_ddp(tokens, cams, **kw)
    def consistency(idx, feats, az):
        rec["order"].append("consistency")
        C = real_consistency(idx, feats, az)
        rec.update(idx=idx.clone(), feats=feats.clone(), az=torch.as_tensor(az).clone(), C=C.clone())
        return C
    def update(*a):
        rec["order"].append("update"); return real_update(*a)
    def sds(images, embeds, combine=None, **kw):
        rec.update(combine=combine, embeds=embeds); return real_sds(images, embeds, combine=combine, **kw)
    def opt_step(*a, **k):  # the gradient of the total loss, as the optimiser would see it
        rec["grad"] = torch.cat([p.grad.flatten() for p in t.model.parameters() if p.grad is not None]).clone()

    t.model.field.activate, t.ddp, t.opt.step = activate, ddp, opt_step
    t.cache.consistency, t.cache.update, t.guidance.sds = consistency, update, sds
    try: rec["row"] = t.train_step()
    finally: del t.guidance.sds  # the teacher is shared with the other tests
    return rec


@pytest.fixture(scope="module")
def step(models, tmp_path_factory):
    t = _trainer(models, tmp_path_factory.mktemp("run"))
    return t, _spied_step(t)


def test_scheduled_alpha_reaches_the_renderer(step):
    t, rec = step
    alpha = t.cfg.alpha_at(STEP)
    assert t.cfg.generator.field.albedo == "scaled_sigmoid" and t.cfg.alpha_start < alpha < t.cfg.alpha_end
    assert rec["alpha"], "the field's albedo activation was never called"
    assert all(a == alpha for a in rec["alpha"]), f"the renderer got alpha {sorted(set(rec['alpha']))}, scheduled {alpha}"
    assert rec["row"]["alpha"] == alpha


def test_consistency_reads_the_previous_render_then_updates_the_cache(step):
    t, rec = step
    assert rec["order"] == ["consistency", "update"]
    before, idx = rec["cache_before"], rec["idx"]
    want = consistency_score(rec["az"], before["azimuth_deg"][idx], rec["feats"], before["features"][idx], -1.0)
    assert want.max() > 0.05  # the previous renders differ from the current ones, so reading the wrong cache shows
    torch.testing.assert_close(rec["C"], want)
    assert rec["row"]["C"] == pytest.approx(want.mean().item(), rel=1e-5)
    # after the step the cache holds this step's renders
    torch.testing.assert_close(t.cache.features[idx], F.normalize(rec["feats"].float(), dim=-1))
    torch.testing.assert_close(t.cache.azimuth_deg[idx], rec["az"])


def test_adaptive_w_neg_is_the_weight_perp_neg_uses(step):
    t, rec = step
    pn, cams, C = t.cfg.perp_neg, rec["cams"], rec["C"]
    torch.testing.assert_close(adaptive_scale(C, pn) * pn.w_neg, pn.w_min + C * pn.dw)  # paper Eq. 11
    torch.testing.assert_close(adaptive_w_neg(C, pn), pn.w_min + C * pn.dw)
    want = view_mix(cams.azimuth_deg, cams.elevation_deg, pn, adaptive_scale(C, pn))[1]
    fixed = view_mix(cams.azimuth_deg, cams.elevation_deg, pn)[1]
    assert not torch.allclose(want, fixed, atol=1e-3)  # the adaptive weights differ from the fixed ones on this batch
    assert rec["combine"] is not None and rec["embeds"].shape[1] == want.shape[1] + 1
    g = torch.Generator().manual_seed(0)
    B, K = want.shape[0], want.shape[1] + 1
    eps_u, eps_c = torch.randn(B, 3, 4, 4, generator=g), torch.randn(B, K, 3, 4, 4, generator=g)
    torch.testing.assert_close(rec["combine"](eps_u, eps_c), perp_neg_eps(eps_u, eps_c, want, t.cfg.sds.guidance_scale))
    assert rec["row"]["w_neg"] == pytest.approx(want.sum(1).mean().item(), rel=1e-5)


def test_loss_weights_scale_their_terms(step, models, tmp_path):
    t, rec = step
    row = rec["row"]
    assert row["loss"] == pytest.approx(LAMBDA_SDS * row["sds"] + LAMBDA_CLIP * row["clip"], rel=1e-5)
    # the same step with one term at weight 1 and the other off: same draws, same terms
    only_sds = _spied_step(_trainer(models, tmp_path / "sds", lambda_sds=1.0, lambda_clip=0.0, bank=t.bank))
    only_clip = _spied_step(_trainer(models, tmp_path / "clip", lambda_sds=0.0, lambda_clip=1.0, bank=t.bank))
    assert only_sds["row"]["sds"] == pytest.approx(row["sds"], rel=1e-5) and "clip" not in only_sds["row"]
    assert only_clip["row"]["clip"] == pytest.approx(row["clip"], rel=1e-5)
    g_sds, g_clip = only_sds["grad"], LAMBDA_CLIP * only_clip["grad"]
    assert g_clip.norm() > 1e-3 * g_sds.norm()  # the CLIP term's gradient is large enough to be seen beside SDS
    err = (rec["grad"] - (LAMBDA_SDS * g_sds + g_clip)).norm()
    assert err < 1e-2 * min(g_clip.norm(), LAMBDA_SDS * g_sds.norm()), f"gradient is not lambda-weighted: error {err}"
