"Speed levers of the mini training step: each switched by a config field, each giving the same numbers it replaces."
import dataclasses, os
import pytest, torch
from instant3d.precision import native_bf16, resolve_dtype, hardware_line, cpu_model
from instant3d.render import RenderConfig, render_rays, occupied_samples, fine_samples
from instant3d.field import TriplaneField, TriplaneFieldConfig
from instant3d.cameras import sample_cameras, get_rays, CameraConfig


def test_suite_pins_float32():
    assert os.environ["INSTANT3D_BF16"] == "0" and resolve_dtype("auto") == torch.float32


def test_auto_follows_cpu_flags(monkeypatch):
    monkeypatch.setenv("INSTANT3D_BF16", "auto")
    assert native_bf16("cpu", frozenset({"amx_bf16"})) and not native_bf16("cpu", frozenset({"avx2"}))
    monkeypatch.setenv("INSTANT3D_BF16", "1")
    assert resolve_dtype("auto") == torch.bfloat16 and resolve_dtype("float32") == torch.float32
    assert cpu_model() in hardware_line()


def test_configs_accept_and_reject_precision():
    from instant3d.sds import SDSConfig
    from instant3d.clip_loss import ClipLossConfig
    assert SDSConfig().dtype == "auto" and ClipLossConfig().dtype == "auto"
    with pytest.raises(ValueError, match="SDSConfig.dtype='fp8'"): SDSConfig(dtype="fp8")
    with pytest.raises(ValueError, match="ClipLossConfig.dtype='half'"): ClipLossConfig(dtype="half")
    with pytest.raises(ValueError, match="RenderConfig.empty_density must be a number >= 0"):
        RenderConfig(empty_density=-1e-3)
    assert RenderConfig.mini().empty_density > 0 and RenderConfig.paper().empty_density == 0


def _field_and_rays(seed=0, n=8):
    torch.manual_seed(seed)
    f = TriplaneField(TriplaneFieldConfig.mini())
    tp = (0.5 * torch.randn(n, 3, 16, 32, 32)).requires_grad_(True)
    cams = sample_cameras(CameraConfig.mini(), n, generator=torch.Generator().manual_seed(seed))
    o, d = get_rays(cams, 16, 16)
    return f, tp, o.reshape(n, -1, 3), d.reshape(n, -1, 3)


def test_empty_space_skipping_matches_full_render():
    f, tp, o, d = _field_and_rays()
    on = dataclasses.replace(RenderConfig.mini(), height=16, width=16)
    off = dataclasses.replace(on, empty_density=0.0)
    outs = {}
    for name, cfg in (("off", off), ("on", on)):
        tp.grad = None
        r = render_rays(f, tp, o, d, cfg, shading="lambertian", generator=torch.Generator().manual_seed(1))
        r["rgb"].square().sum().backward()
        outs[name] = (r["rgb"].detach(), tp.grad.clone())
    err = (outs["on"][0] - outs["off"][0]).abs().max().item()
    assert 0 <= err < 5e-3  # at most sigma_min * L of opacity per ray
    cos = torch.nn.functional.cosine_similarity(outs["on"][1].flatten().double(), outs["off"][1].flatten().double(), 0)
    assert cos > 0.999


def test_empty_space_skipping_evaluates_fewer_points():
    f, tp, o, d = _field_and_rays()
    counted = []
    class Counting:
        box_radius = f.box_radius
        def forward_packed(self, *a, **k): counted.append(len(a[1])); return f.forward_packed(*a, **k)
        def density_packed(self, *a, **k): return f.density_packed(*a, **k)
        def __call__(self, *a, **k): return f(*a, **k)
        def density_at(self, *a, **k): return f.density_at(*a, **k)
    cfg = dataclasses.replace(RenderConfig.mini(), height=16, width=16)
    for tau in (0.0, 1e-3):
        counted.clear()
        render_rays(Counting(), tp, o, d, dataclasses.replace(cfg, empty_density=tau), generator=torch.Generator())
        if tau == 0: full = sum(counted)
        else: skipped = sum(counted[1:])  # the first call is the pass without gradients over the coarse samples
    assert skipped < full


def test_occupied_samples_keeps_neighbours():
    occ = occupied_samples(torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.0]]), 0.5)
    assert occ.tolist() == [[True, True, True, False, False]]


def _rows_seen(trainer):
    "Wrap the teacher's UNet call: the number of rows of each call."
    rows, fn = [], trainer.guidance._unet_fn()
    def counting(x, *a, **k): rows.append(len(x)); return fn(x, *a, **k)
    object.__setattr__(trainer.guidance, "_unet_call", counting)
    return rows


def test_trainer_skips_zero_weight_negatives(teacher_dir, tmp_path):
    "Wiring: the trainer tells the teacher which Perp-Neg negatives weigh 0; those rows are not run, the loss is unchanged."
    from dataclasses import replace
    from instant3d.train_config import tiny_train_config
    from instant3d.train import Trainer
    losses, rows = {}, {}
    for skip in (False, True):
        cfg = tiny_train_config(teacher_dir, batch_size=8)
        cfg = replace(cfg, sds=replace(cfg.sds, skip_unused=skip))
        t = Trainer(cfg, tmp_path / f"skip{skip}")
        rows[skip] = _rows_seen(t)
        losses[skip] = [t.train_step()["sds"] for _ in range(3)]
    assert sum(rows[True]) < sum(rows[False]) == 3 * 8 * 4  # uncond + 3 conditions per sample without skipping
    for a, b in zip(losses[True], losses[False]): assert abs(a - b) <= 1e-4 * max(1.0, abs(b))


def test_compile_failure_falls_back_to_eager(teacher_dir, monkeypatch):
    from instant3d.sds import SDSGuidance, SDSConfig
    def broken(*a, **k): raise RuntimeError("no compiler here")
    monkeypatch.setattr(torch, "compile", broken)
    g = SDSGuidance.from_pretrained(SDSConfig(teacher=str(teacher_dir), compile=True))
    with pytest.warns(UserWarning, match="torch.compile failed"): fn = g._unet_fn()
    assert fn is g.unet
    emb = g.encode_prompts(["a red cube"])[:, None].expand(2, 1, -1, -1)
    out = g.sds(torch.rand(2, 3, 16, 16), emb, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out["grad"]).all()


def test_channels_last_teacher_same_noise_prediction(teacher_dir):
    from instant3d.sds import SDSGuidance, SDSConfig
    res = []
    for cl in (False, True):
        g = SDSGuidance.from_pretrained(SDSConfig(teacher=str(teacher_dir), channels_last=cl))
        emb = g.encode_prompts(["a red cube"])[:, None].expand(3, 1, -1, -1)
        res.append(g.predict_eps(torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0)),
                                 torch.tensor([10, 400, 900]), emb))
    torch.testing.assert_close(res[1][0], res[0][0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(res[1][1], res[0][1], atol=1e-5, rtol=1e-4)
