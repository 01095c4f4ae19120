"""The authors' checkpoint through `instant3d convert-official`, proven against their own code.

A `G_ema` is rebuilt from the authors' key list by the fill rule of tests/fixtures/official_generator/README.md,
saved as `{"G_ema": ...}`, converted by the CLI, loaded as our `official()` model, and compared with what the
authors' inference code computed for the same weights and inputs (oracle.safetensors). Full size: 270 M parameters,
built once per module (about two minutes on two CPU threads, most of it the fill's float64 draws and one decoder
forward at 256 x 256)."""
import hashlib, json, math, os, subprocess
from pathlib import Path
import pytest
import torch
import torch.nn.functional as F
from conftest import EXE, ENV
from instant3d.cameras import get_rays, orbit_cameras
from instant3d.convert_official import convert_official, official_key, map_official_state, read_official_checkpoint
from instant3d.field import apply_mlp, project_points, sample_triplane
from instant3d.generator import WEIGHTS_NAME, Instant3D, Instant3DConfig, load_pipeline
from instant3d.text import tiny_text_encoder_folder

FIX = Path(__file__).parent / "fixtures" / "official_generator"
KEYS = json.loads((FIX / "keys.json").read_text())


def fill_official(keys) -> dict:
    "The fixture's fill rule: the i-th sorted key from seed i, float64 normal cast to float32, times float32(s)."
    shapes = {k: s for k, s, _ in keys}
    out = {}
    for i, k in enumerate(sorted(shapes)):
        s = shapes[k]
        scale = 1 / math.sqrt(math.prod(s[1:])) if len(s) >= 2 else 0.1
        out[k] = torch.randn(s, generator=torch.Generator().manual_seed(i), dtype=torch.float64).float() * scale
    return {k: out[k] for k, _, _ in keys}  # state_dict order, as the authors' checkpoint


def sha_f32le(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().astype("<f4").tobytes()).hexdigest()


@pytest.fixture(scope="module")
def oracle():
    from safetensors.torch import load_file
    return load_file(str(FIX / "oracle.safetensors"))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    "Fill, save as the authors do, convert (CLI, fp32; Python, fp16); the .pth is deleted afterwards."
    d = tmp_path_factory.mktemp("official")
    state = fill_official(KEYS)
    want = json.loads((FIX / "weights_check.json").read_text())["sha256_f32le"]
    bad_fill = [k for k, v in state.items() if sha_f32le(v) != want[k]]
    pth = d / "model-pretrained.pth"
    torch.save({"G_ema": state}, pth)
    del state
    tiny_text_encoder_folder(d / "sd21", hidden=1024, layers=1, heads=16, max_length=77)  # [B, 77, 1024] tokens
    p = subprocess.run([EXE, "convert-official", str(pth), "--out", str(d / "model"), "--text-encoder", str(d / "sd21")],
                       capture_output=True, text=True, env=ENV)
    assert p.returncode == 0, p.stderr
    half = convert_official(pth, d / "half", fp16=True)
    pth.unlink()
    return dict(model=d / "model", half=half, bad_fill=bad_fill, stdout=p.stdout)


@pytest.fixture(scope="module")
def model(converted):
    return Instant3D.from_pretrained(converted["model"]).eval()


@pytest.fixture(scope="module")
def triplane(model, oracle):
    with torch.no_grad(): return model.triplane(oracle["input.text_embeds"], noise=oracle["input.style_noise"])


def close(a, b, atol):
    torch.testing.assert_close(a.float(), b.float(), atol=atol, rtol=0)


def test_fill_rule_reproduces_the_checkpoint(converted):
    assert converted["bad_fill"] == []


def test_every_key_is_mapped_once(converted):
    from safetensors import safe_open
    with torch.device("meta"): official = Instant3D(Instant3DConfig.official())
    ours = {k: tuple(v.shape) for k, v in official.state_dict().items()}
    assert {official_key(k): tuple(s) for k, s, _ in KEYS} == ours
    with safe_open(str(converted["model"] / WEIGHTS_NAME), "pt") as f: assert len(list(f.keys())) == len(KEYS) == 1742
    assert "wrote" in converted["stdout"] and "instant3d generate --checkpoint" in converted["stdout"]


def test_key_errors_name_the_keys():
    state = {k: torch.empty(s, device="meta") for k, s, _ in KEYS}
    state["module_extra.weight"] = state.pop("decoder.net.2.weight")
    with pytest.raises(ValueError, match=r"1 keys left over \[module_extra.weight\], 1 missing \[field.mlp.2.weight\]"):
        map_official_state(state)


class Module:  # any class: what a pickled nn.Module holds
    pass


def test_unsafe_pickle_is_refused(tmp_path):
    torch.save({"G_ema": Module()}, tmp_path / "m.pth")
    with pytest.raises(ValueError, match="refused by torch.load.weights_only=True.*never loaded unsafely"):
        read_official_checkpoint(tmp_path / "m.pth")
    p = subprocess.run([EXE, "convert-official", str(tmp_path / "m.pth"), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, env=ENV)
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and p.stderr.startswith("instant3d: error:")
    assert not (tmp_path / "out").exists()


def test_text_branches_and_style(model, oracle):
    tok, z = oracle["input.text_embeds"], oracle["input.style_noise"]
    with torch.no_grad():
        close(model.style.text(tok)[0], oracle["inter.style_text_vec"], 1e-6)
        close(model.decoder.style_mlp(model.style(tok, noise=z))[0], oracle["inter.style_emb"], 1e-5)
        close(model.token_to_plane(tok)[0], oracle["inter.base_map"], 1e-6)


def test_triplane(triplane, oracle):
    assert triplane.shape == (1, 3, 32, 256, 256)
    x = triplane.double().reshape(96, -1)
    close(x.mean(1), oracle["triplane.channel_mean"], 2e-5)
    close(x.std(1, unbiased=False), oracle["triplane.channel_std"], 2e-5)
    close(triplane.reshape(-1)[oracle["triplane.sample_flat_index"]], oracle["triplane.sample_values"], 2e-5)
    close(torch.stack([triplane.min(), triplane.max()]), oracle["triplane.min_max"], 2e-5)


def test_points(model, triplane, oracle):
    pts = oracle["input.points"][None]  # [1, 1024, 3] world units
    f = model.field
    with torch.no_grad():
        close(project_points(pts, f.cfg.box_radius)[0], oracle["points.plane_uv"], 1e-6)
        close(sample_triplane(triplane, pts, f.cfg.box_radius)[0], oracle["points.plane_features"], 2e-5)
        raw = apply_mlp(f.mlp, f.features(triplane, pts))[0].T  # [1024, 4]
        close(raw, oracle["points.mlp_raw"], 1e-6)
        close(raw[:, 0], oracle["points.sigma_raw_no_blob"], 1e-6)
        close(f.blob(pts)[0], oracle["points.blob"], 1e-5)
        sigma, logits = f.raw(triplane, pts)  # our sigma_raw includes the blob and the -1 shift
        close(sigma[0] - f.cfg.density_shift, oracle["points.sigma_with_blob"], 1e-5)
        out = f(triplane, pts)
        close(out["density"][0], oracle["points.density_softplus"], 1e-5)
        close(out["albedo"][0], oracle["points.rgb_eval_sigmoid"], 1e-6)
        close(0.5 * logits[0] + 0.5, oracle["points.rgb_train_linear"], 1e-6)


@pytest.mark.parametrize("cam,az,el,r,size", [("camA", 30.0, 30.0, 3.3, 64), ("camB", 0.0, 0.0, 4.29, 16)])
def test_camera_frame_is_mirrored(oracle, cam, az, el, r, size):
    "Their camera at (theta, phi) is ours at (elevation 90 - theta, azimuth phi - 180), its image mirrored left-right."
    o, d = get_rays(orbit_cameras(torch.tensor([az]), torch.tensor([el]), torch.tensor([r]), torch.tensor([75.0])),
                    size, size)
    theirs = F.normalize(oracle[f"{cam}.rays_d"].double(), dim=-1).float().view(size, size, 3)
    close(d[0].flip(1), theirs, 1e-5)
    close(o[0].reshape(-1, 3), oracle[f"{cam}.rays_o"], 1e-5)


class ReleasedSampler:
    """The authors' ray sampling and marching, written from tests/fixtures/official_generator/README.md, driven by
    OUR field: if their images come out, the converted model renders what theirs renders."""
    def __init__(self, field, triplane, oracle): self.f, self.tp, self.o = field, triplane, oracle

    def sigma(self, x): # [..., 3] world points -> [...] sigma_raw + blob (theirs; ours includes the -1 shift)
        return (self.f.raw(self.tp, x.reshape(1, -1, 3))[0][0] - self.f.cfg.density_shift).view(x.shape[:-1])

    def at(self, x): # -> sigma, eval-head rgb, normal = normalize(-central difference of sigma, step 0.01)
        out = self.f(self.tp, x.reshape(1, -1, 3))
        s, c = (out["sigma_raw"][0] - self.f.cfg.density_shift).view(x.shape[:-1]), out["albedo"][0].view(*x.shape[:-1], 3)
        g = torch.stack([(self.sigma(x + 0.01 * e) - self.sigma(x - 0.01 * e)) / 0.02 for e in torch.eye(3)], -1)
        return s, c, torch.nan_to_num(-g / g.pow(2).sum(-1, keepdim=True).clamp_min(1e-20).sqrt())

    @staticmethod
    def march(t, s, c, n): # midpoint compositing; colours and normals in 2x - 1 units, before the background
        delta, mid = t[:, 1:] - t[:, :-1], (lambda v: (v[:, :-1] + v[:, 1:]) / 2)
        alpha = 1 - torch.exp(-F.softplus(mid(s) - 1) * delta)
        w = alpha * torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha + 1e-10], 1), 1)[:, :-1]
        W = w.sum(1, keepdim=True)
        depth = torch.nan_to_num((w * mid(t)).sum(1, keepdim=True) / W, nan=float("inf")).clamp(t.min(), t.max())
        return dict(rgb=2 * (w[..., None] * mid(c)).sum(1) - 1, depth=depth, normal=2 * (w[..., None] * mid(n)).sum(1) - 1,
                    W=W, w=w)

    def coarse(self, cam, u=None): # 64 samples on linspace(start, end); missed rays: the EG3D fix-up
        a, b = self.o[f"{cam}.box_t_entry_raw"][:, 0], self.o[f"{cam}.box_t_exit_raw"][:, 0]
        ok = b > a
        start, end = torch.where(ok, a, a[ok].min()), torch.where(ok, b, a[ok].max())
        t = start[:, None] + torch.arange(64) / 63 * (end - start)[:, None]
        return t if u is None else t + u * ((end - start) / 63)[:, None]

    @staticmethod
    def importance(t, w, u): # max-pool, avg-pool, +0.01, entries 1..61, +1e-5; inverted on the coarse midpoints
        v = (F.avg_pool1d(F.max_pool1d(w[:, None], 2, 1, padding=1), 2, 1)[:, 0] + 0.01)[:, 1:-1] + 1e-5
        cdf = torch.cat([torch.zeros_like(v[:, :1]), (v / v.sum(1, keepdim=True)).cumsum(1)], 1)  # [R, 62]
        bins = ((t[:, :-1] + t[:, 1:]) / 2)[:, :62]
        k = torch.searchsorted(cdf.contiguous(), u.contiguous(), right=True)
        lo, hi = (k - 1).clamp_min(0), k.clamp_max(61)
        c0, c1, b0, b1 = cdf.gather(1, lo), cdf.gather(1, hi), bins.gather(1, lo), bins.gather(1, hi)
        return b0 + (u - c0) / torch.where(c1 - c0 < 1e-5, torch.ones_like(c0), c1 - c0) * (b1 - b0)

    def render(self, cam, stratified_u=None, importance_u=None):
        o, d = self.o[f"{cam}.rays_o"], self.o[f"{cam}.rays_d"]
        tc = self.coarse(cam, stratified_u)
        w = self.march(tc, *self.at(o[:, None] + tc[..., None] * d[:, None]))["w"]
        u = importance_u if importance_u is not None else torch.linspace(0, 1, 64).expand(len(o), 64)
        ti = self.importance(tc, w, u)
        t = torch.cat([tc, ti], 1).sort(1).values
        return dict(self.march(t, *self.at(o[:, None] + t[..., None] * d[:, None])), coarse=tc, importance=ti)


def _image(v, size): return v.T.reshape(-1, size, size)  # [H * W, C] -> [C, H, W]


def test_render_camera_A(model, triplane, oracle):
    "Deterministic sampling (no jitter, importance quantiles linspace(0, 1, 64)), 64 x 64."
    with torch.no_grad(): r = ReleasedSampler(model.field, triplane, oracle).render("camA")
    for k in ("rgb", "normal"): close(r[k], oracle[f"camA.renderer_{k}"], 1e-5)
    close(r["W"], oracle["camA.renderer_weights_sum"], 1e-5)
    close(_image(r["rgb"] + (1 - r["W"]), 64), oracle["camA.rgb"], 1e-5)  # their +1 background after 2x - 1
    close(_image(r["normal"] + (1 - r["W"]), 64), oracle["camA.normal"], 1e-5)
    seen = r["W"][:, 0] > 1e-2  # depth of nearly empty pixels is a ratio of tiny weights (README section 9)
    assert seen.sum() > 300
    close(r["depth"][seen], oracle["camA.renderer_depth"][seen], 1e-4)


def test_render_camera_B(model, triplane, oracle):
    "Their official test view 0 (16 x 16) with their recorded random draws injected."
    with torch.no_grad():
        r = ReleasedSampler(model.field, triplane, oracle).render("camB", oracle["camB.stratified_u"],
                                                                  oracle["camB.importance_u"])
    close(r["coarse"], oracle["camB.depths_coarse"], 1e-6)
    close(r["importance"], oracle["camB.depths_importance"], 1e-5)
    close(r["W"], oracle["camB.renderer_weights_sum"], 1e-5)
    close(_image(r["rgb"] + (1 - r["W"]), 16), oracle["camB.rgb"], 1e-5)
    close(_image(r["normal"] + (1 - r["W"]), 16), oracle["camB.normal"], 1e-5)
    depth = _image((r["depth"] + (1 - r["W"]) * 10) * oracle["camB.depth_scale"][:, None], 16)
    seen = _image(r["W"] > 1e-3, 16)
    close(depth[seen], oracle["camB.depth"][seen], 1e-4)


def test_fp16_folder(converted, model):
    sizes = [(converted[k] / WEIGHTS_NAME).stat().st_size for k in ("model", "half")]
    assert 0.49 < sizes[1] / sizes[0] < 0.51
    half = Instant3D.from_pretrained(converted["half"])
    a, b = model.field.mlp[0].weight, half.field.mlp[0].weight
    assert b.dtype == torch.float32 and (a - b).abs().max() <= a.abs().max() * 2 ** -10


def test_loads_like_any_model_folder(converted):
    pipe, ck, note = load_pipeline(None, converted["model"])  # what generate, eval and the explorer call
    assert pipe.config.preset == "official" and note is None and pipe.text_encoder.max_length == 77
    meta = json.loads((converted["model"] / "training.json").read_text())
    assert meta["prompts"] == "portraits" and meta["clip_model"] == "openai/clip-vit-large-patch14"


def test_generate_cli_renders_it(converted, tmp_path):
    out = tmp_path / "gen"
    p = subprocess.run([EXE, "generate", "a red cube", "--checkpoint", str(converted["model"]), "--out", str(out),
                        "--size", "16", "--frames", "1", "--mesh-res", "8", "--formats", "png"],
                       capture_output=True, text=True, env=dict(ENV, OMP_NUM_THREADS="2"))
    assert p.returncode == 0, p.stderr
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["checkpoint"] == str(converted["model"]) and meta["preset"] == "official"
    assert list(out.glob("*.png"))
