"Contracts of the scaled-sigmoid, the triplane field and the volume renderer (rays, shading, render): oracles, analytic scenes, gradients, errors."
import dataclasses, math
import pytest
import torch
import torch.nn.functional as F
from instant3d.conventions import config_to_dict, config_from_dict, BOX_RADIUS
from instant3d.scaled_sigmoid import scaled_sigmoid, albedo_activation, Schedule, alpha_schedule
from instant3d.field import TriplaneField, TriplaneFieldConfig, sample_triplane, project_points
from instant3d.rays import composite_weights, composite, sample_pdf, smooth_weights, ray_box_intersect
from instant3d.shading import estimate_normals, NORMAL_METHODS
from instant3d.render import RenderConfig, render, render_rays
from instant3d.cameras import orbit_cameras, sample_cameras, CameraConfig


class BallField:
    "Analytic field: density rho inside |x - centre| < a (or a smooth radial bump), constant albedo."
    def __init__(self, rho=2.0, a=0.8, centre=(0., 0., 0.), albedo=(1.0, 0.5, 0.0), smooth=False):
        self.rho, self.a, self.smooth = rho, a, smooth
        self.centre, self.albedo = torch.tensor(centre), torch.tensor(albedo)
    def density_at(self, triplane, points):
        r = (points - self.centre).norm(dim=-1)
        return self.rho * torch.exp(-(r / self.a) ** 2) if self.smooth else self.rho * (r < self.a).to(points.dtype)
    def __call__(self, triplane, points, alpha=1.0):
        return dict(density=self.density_at(triplane, points), albedo=self.albedo.expand(*points.shape[:-1], 3))


def rays_towards(targets, eye=(0.0, 0.0, -4.0)):
    o = torch.tensor(eye).expand(len(targets), 3)
    return o[None].clone(), F.normalize(targets - o, dim=-1)[None]


# ---------------------------------------------------------------- scaled-sigmoid and schedules
@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.75, 1.0])
def test_scaled_sigmoid_value_slope_range(alpha):
    x = torch.zeros(1, requires_grad=True)
    y = scaled_sigmoid(x, alpha); y.backward()
    assert abs(y.item() - 1 / (2 * alpha)) < 1e-6 and abs(x.grad.item() - 0.25) < 1e-6
    ends = scaled_sigmoid(torch.tensor([-100.0, 100.0]) / alpha, alpha)
    assert ends[0] >= 0 and abs(ends[1].item() - 1 / alpha) < 1e-5


@pytest.mark.parametrize("alpha", [0.0, -1.0, 1.01])
def test_scaled_sigmoid_rejects_alpha(alpha):
    with pytest.raises(ValueError, match="alpha"): scaled_sigmoid(torch.zeros(1), alpha)


def test_albedo_activation_kinds():
    x = torch.linspace(-6, 6, 13)
    assert torch.equal(albedo_activation(x, "sigmoid"), torch.sigmoid(x))
    torch.testing.assert_close(albedo_activation(x, "released_eval"), torch.sigmoid(x) * 1.002 - 0.001)
    assert albedo_activation(torch.tensor([20.0]), "scaled_sigmoid", 0.5).item() > 1.99  # never clamped
    with pytest.raises(ValueError, match="linear"): albedo_activation(x, "linear")


def test_schedule_values_and_round_trip():
    s = Schedule(0.5, 1.0, steps=100, kind="linear", delay=10)
    assert [s(k) for k in (0, 10, 60, 110, 10**6)] == [0.5, 0.5, 0.75, 1.0, 1.0]
    c = Schedule(0.0, 1.0, steps=10, kind="cosine")
    assert c(0) == 0.0 and abs(c(5) - 0.5) < 1e-12 and c(10) == 1.0
    a = alpha_schedule(1000)
    assert (a(0), a(250), a(500), a(999)) == (0.5, 0.75, 1.0, 1.0)
    assert config_from_dict(Schedule, config_to_dict(a)) == a
    for bad in (dict(kind="exp"), dict(steps=-1, kind="linear"), dict(start=0.0, end=1.0)):
        with pytest.raises(ValueError): Schedule(**bad)
    with pytest.raises(ValueError): s(-1)


# ---------------------------------------------------------------- field
def test_field_presets_round_trip_and_param_counts():
    counts = {}
    for name in ("paper", "official", "mini"):
        cfg = getattr(TriplaneFieldConfig, name)()
        assert config_from_dict(TriplaneFieldConfig, config_to_dict(cfg)) == cfg
        counts[name] = sum(p.numel() for p in TriplaneField(cfg).parameters())
    assert counts["official"] == 2_372 and counts["paper"] == 6_468
    assert TriplaneFieldConfig.official().box_radius == BOX_RADIUS
    for bad in (dict(aggregation="sum"), dict(albedo="relu"), dict(hidden=0)):
        with pytest.raises(ValueError): TriplaneFieldConfig(**bad)


def test_triplane_sampling_hand_built_planes():
    "Each plane holds its own grid coordinates (u, v): sampling must return the projected point coordinates."
    R = 16
    c = (torch.arange(R) + 0.5) / R * 2 - 1
    v, u = torch.meshgrid(c, c, indexing="ij")
    tp = torch.zeros(1, 3, 6, R, R)
    for k in range(3): tp[0, k, 2 * k], tp[0, k, 2 * k + 1] = u, v
    g = torch.Generator().manual_seed(1)
    pts = (torch.rand(1, 300, 3, generator=g) * 2 - 1) * BOX_RADIUS * (1 - 1 / R)
    f = sample_triplane(tp, pts, BOX_RADIUS)
    p = pts[0] / BOX_RADIUS
    for k, (a, b) in enumerate([(0, 1), (0, 2), (2, 1)]):  # planes xy, xz, zy
        torch.testing.assert_close(f[0, k, :, 2 * k], p[:, a], atol=1e-5, rtol=0)
        torch.testing.assert_close(f[0, k, :, 2 * k + 1], p[:, b], atol=1e-5, rtol=0)
    assert project_points(pts, BOX_RADIUS).shape == (1, 3, 300, 2)


def test_field_origin_density_and_gradients():
    field = TriplaneField(TriplaneFieldConfig.official())
    with torch.no_grad(): field.mlp[-1].weight.zero_(); field.mlp[-1].bias.zero_()
    out = field(torch.zeros(1, 3, 32, 8, 8), torch.zeros(1, 1, 3))
    torch.testing.assert_close(out["density"], F.softplus(torch.tensor([[9.0]])))
    for cfg in (TriplaneFieldConfig.mini(), TriplaneFieldConfig.official(), TriplaneFieldConfig.paper()):
        f = TriplaneField(cfg)
        tp = torch.randn(2, 3, cfg.channels, 8, 8, requires_grad=True)
        o = f(tp, torch.randn(2, 40, 3), alpha=0.5)
        (o["density"].sum() + o["albedo"].sum()).backward()
        assert tp.grad.abs().sum() > 0 and all(p.grad.abs().sum() > 0 for p in f.parameters())
        assert o["density"].min() >= 0 and o["albedo"].shape == (2, 40, 3) and o["sigma_raw"].shape == (2, 40)


def test_field_rejects_bad_inputs():
    f = TriplaneField(TriplaneFieldConfig.mini())
    with pytest.raises(ValueError, match="channels"): f(torch.zeros(1, 3, 8, 4, 4), torch.zeros(1, 1, 3))
    with pytest.raises(ValueError, match="points"): f(torch.zeros(1, 3, 16, 4, 4), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="batch"): f(torch.zeros(2, 3, 16, 4, 4), torch.zeros(1, 5, 3))
    with pytest.raises(ValueError, match="alpha"): f(torch.zeros(1, 3, 16, 4, 4), torch.zeros(1, 1, 3), alpha=2.0)


# ---------------------------------------------------------------- compositing and sampling
def test_compositing_matches_per_sample_loop():
    g = torch.Generator().manual_seed(0)
    R, S = 8, 17
    t = torch.sort(torch.rand(R, S, generator=g, dtype=torch.float64) * 3 + 1, -1).values
    far = torch.full((R,), 4.2, dtype=torch.float64)
    dens = torch.rand(R, S, generator=g, dtype=torch.float64) * 4
    col, bg = torch.rand(R, S, 3, generator=g, dtype=torch.float64), torch.rand(R, 3, generator=g, dtype=torch.float64)
    w, _ = composite_weights(dens, t, far)
    rgb = composite(w, col, bg)
    for r in range(R):
        trans, acc, op = 1.0, torch.zeros(3, dtype=torch.float64), 0.0
        for i in range(S):
            delta = (t[r, i + 1] if i + 1 < S else far[r]) - t[r, i]
            a = 1 - math.exp(-dens[r, i].item() * delta.item())
            acc += trans * a * col[r, i]; op += trans * a; trans *= 1 - a
        torch.testing.assert_close(rgb[r], acc + (1 - op) * bg[r])
        assert abs(w[r].sum().item() - op) < 1e-12
    assert rgb.min() >= 0 and rgb.max() <= 1


def test_ray_box_misses_get_zero_length():
    o = torch.tensor([[0.0, 3.0, -4.0], [0.0, 0.0, -4.0]])
    d = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    near, far, hit = ray_box_intersect(o, d, BOX_RADIUS)
    assert hit.tolist() == [False, True] and near[0] == far[0] == 0
    assert abs(near[1] - (4 - BOX_RADIUS)) < 1e-6 and abs(far[1] - (4 + BOX_RADIUS)) < 1e-6


def test_sphere_opacity_matches_chord():
    ball = BallField(rho=1.5, a=0.8, centre=(0.1, -0.05, 0.2))
    targets = torch.stack([torch.linspace(-0.9, 0.9, 21), torch.linspace(0.4, -0.5, 21), torch.zeros(21)], -1)
    o, d = rays_towards(targets)
    out = render_rays(ball, None, o, d, RenderConfig(n_samples=8192, n_importance=0, background="white"), perturb=False)
    c = ball.centre - o[0]
    b2 = (c ** 2).sum(-1) - (c * d[0]).sum(-1) ** 2
    chord = 2 * (ball.a ** 2 - b2).clamp_min(0).sqrt()
    assert (chord > 0).sum() > 10
    assert (out["opacity"][0] - (1 - torch.exp(-ball.rho * chord))).abs().max() < 1e-3


def test_empty_field_gives_background_exactly():
    g = torch.Generator().manual_seed(0)
    cams = sample_cameras(CameraConfig.paper(), 3, generator=g)
    cfg = dataclasses.replace(RenderConfig.mini(), height=8, width=8)
    bg = torch.tensor([[1.0, 1.0, 1.0], [0.2, 0.7, 0.1], [0.0, 0.0, 0.0]])
    out = render(BallField(rho=0.0), None, cams, cfg, shading="random", background=bg, generator=g)
    assert torch.equal(out["rgb"], bg[:, :, None, None].expand(3, 3, 8, 8))  # no grey pixels (released bug)
    assert out["opacity"].eq(0).all() and out["depth"].eq(0).all()
    white = render(BallField(rho=0.0), None, cams, dataclasses.replace(cfg, background="white"), generator=g)
    assert white["rgb"].eq(1).all()


def test_semi_transparent_pixel_stays_in_unit_range():
    o, d = rays_towards(torch.zeros(1, 3))
    bg = torch.ones(1, 3)
    half = render_rays(BallField(rho=-math.log(0.5) / 1.6, a=0.8), None, o, d, RenderConfig(n_samples=1024, n_importance=0),
                       background=bg, perturb=False)
    torch.testing.assert_close(half["rgb"][0, 0], torch.tensor([1.0, 0.75, 0.5]), atol=2e-3, rtol=0)


def test_importance_samples_concentrate():
    bins = torch.linspace(0, 1, 9)[None]
    w = torch.zeros(1, 8); w[0, 5] = 1.0
    s = sample_pdf(bins, smooth_weights(w, "none"), 64, generator=torch.Generator().manual_seed(0))
    assert ((s >= 5 / 8) & (s <= 6 / 8)).all()
    torch.testing.assert_close(smooth_weights(torch.tensor([[0., 0., 1., 0., 0.]])), torch.tensor([[0.01, 0.51, 1.01, 0.51, 0.01]]))
    o, d = rays_towards(torch.zeros(1, 3))
    r = render_rays(BallField(rho=50.0, a=0.3), None, o, d, RenderConfig(importance_smoothing="none"), generator=torch.Generator().manual_seed(0))
    t = r["t"][0, 0]
    assert ((t > 3.69) & (t < 3.93)).sum() >= 0.9 * 64


@pytest.mark.parametrize("method", NORMAL_METHODS)
def test_normals_of_ball_point_outward(method):
    sm = BallField(rho=30.0, a=0.5, smooth=True)
    o, d = rays_towards(torch.stack([torch.linspace(-0.35, 0.35, 7), torch.linspace(0.3, -0.3, 7), torch.zeros(7)], -1))
    r = render_rays(sm, None, o, d, RenderConfig(normals=method), shading="lambertian", perturb=False)
    x = o + r["depth"][..., None] * d
    assert F.cosine_similarity(r["normal"], F.normalize(x, dim=-1), dim=-1).min() > 0.99


# ---------------------------------------------------------------- render through cameras
def test_render_shapes_gradients_and_determinism():
    g = torch.Generator().manual_seed(0)
    fcfg = TriplaneFieldConfig.mini()
    field = TriplaneField(fcfg)
    tp = (0.5 * torch.randn(2, 3, fcfg.channels, 16, 16, generator=g)).requires_grad_(True)
    cams = sample_cameras(CameraConfig.mini(), 2, generator=g)
    cfg = dataclasses.replace(RenderConfig.mini(), height=12, width=10)
    out = render(field, tp, cams, cfg, shading=("lambertian", "albedo"), alpha=0.5, generator=g)
    assert out["rgb"].shape == (2, 3, 12, 10) and out["opacity"].shape == (2, 1, 12, 10) and out["depth"].shape == (2, 1, 12, 10)
    assert out["normal"].shape == (2, 3, 12, 10) and out["shading"] == ("lambertian", "albedo")
    (out["rgb"].mean() + out["depth"].mean()).backward()
    assert tp.grad.abs().sum() > 0 and all(p.grad.abs().sum() > 0 for p in field.parameters())
    with torch.no_grad():
        a = render(field, tp, cams, cfg, background=torch.ones(2, 3), perturb=False)
        b = render(field, tp, cams, dataclasses.replace(cfg, chunk_rays=7), background=torch.ones(2, 3), perturb=False)
    for k in ("rgb", "opacity", "depth"): torch.testing.assert_close(a[k], b[k])


def test_render_rejects_bad_inputs():
    field = TriplaneField(TriplaneFieldConfig.mini())
    cams = orbit_cameras(torch.tensor([0.0, 90.0]), 0.0, 3.3, 45.0)
    tp = torch.zeros(2, 3, 16, 8, 8)
    cfg = dataclasses.replace(RenderConfig.mini(), height=4, width=4)
    with pytest.raises(ValueError, match="shading"): render(field, tp, cams, cfg, shading="phong")
    with pytest.raises(ValueError, match="background"): render(field, tp, cams, cfg, background=torch.full((2, 3), 2.0))
    with pytest.raises(ValueError, match="triplanes"): render(field, tp[:1], cams, cfg)
    with pytest.raises(ValueError, match="box_radius"): render(field, tp, cams, dataclasses.replace(cfg, box_radius=1.0))
    with pytest.raises(ValueError, match="unit"): render_rays(field, tp, torch.zeros(2, 3, 3), torch.ones(2, 3, 3), cfg)
    for bad in (dict(n_samples=0), dict(background="pink"), dict(shading=(("albedo", 0.7),)), dict(normals="analytic"), dict(normals_at="ray")):
        with pytest.raises(ValueError): RenderConfig(**bad)
    for name in ("paper", "official", "mini"):
        c = getattr(RenderConfig, name)()
        assert config_from_dict(RenderConfig, config_to_dict(c)) == c


# ---------------------------------------------------------------- packed rendering (speed)
from instant3d.field import sample_planes, sample_planes_packed, triplane_atlas, atlas_grid
from instant3d.rays import ray_sphere_intersect, ray_segments, fine_samples
from instant3d.shading import query_field, query_density


@pytest.mark.parametrize("chunks", [1, 3])
def test_atlas_sampling_matches_per_batch_grid_sample(chunks):
    "One atlas grid_sample == per-batch grid_sample with zero padding, values and gradients (float64: to rounding)."
    g = torch.Generator().manual_seed(0)
    tp0 = torch.randn(3, 3, 4, 8, 10, generator=g, dtype=torch.float64)
    pts0 = torch.randn(3, 30, 3, generator=g, dtype=torch.float64) * 1.3
    pts0[:, :3] = torch.tensor([[1.75, -1.75, 0.2], [1.9, 0.0, -1.8], [3.0, 0.1, 0.1]], dtype=torch.float64)  # edge, just out, far out
    res = []
    for packed in (False, True):
        tp, pts = tp0.clone().requires_grad_(True), pts0.clone().requires_grad_(True)
        if packed:
            f = sample_planes_packed(tp, pts.reshape(-1, 3), torch.arange(3).repeat_interleave(30), BOX_RADIUS, chunks)
            f = f.permute(0, 3, 2, 1).reshape(-1, 3, 4)[:90].view(3, 30, 3, 4).permute(0, 2, 3, 1)
        else: f = sample_planes(tp, pts, BOX_RADIUS)
        f.backward(torch.sin(torch.arange(f.numel(), dtype=f.dtype)).view_as(f))
        res.append((f.detach(), tp.grad, pts.grad))
    for a, b in zip(*res): torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    assert triplane_atlas(tp0).shape == (1, 4, 3 * 3 * 10, 12)


@pytest.mark.parametrize("hidden,aggregation", [(16, "concat"), (32, "concat"), (8, "mean")])
def test_packed_field_matches_batched_field(hidden, aggregation):
    "forward_packed (first layer per texel when hidden <= channels) == forward, values and gradients."
    cfg = dataclasses.replace(TriplaneFieldConfig.mini(), hidden=hidden, aggregation=aggregation)
    f = TriplaneField(cfg).double()
    g = torch.Generator().manual_seed(1)
    tp0 = torch.randn(2, 3, cfg.channels, 8, 8, generator=g, dtype=torch.float64)
    pts = torch.randn(2, 25, 3, generator=g, dtype=torch.float64)
    res = []
    for packed in (False, True):
        f.zero_grad(); tp = tp0.clone().requires_grad_(True)
        o = f.forward_packed(tp, pts.reshape(-1, 3), torch.arange(2).repeat_interleave(25), 0.5) if packed else f(tp, pts, 0.5)
        (o["density"].sum() + o["albedo"].square().sum()).backward()
        res.append([o["density"].reshape(-1).detach(), o["albedo"].reshape(-1, 3).detach(), tp.grad] + [p.grad.clone() for p in f.parameters()])
    for a, b in zip(*res): torch.testing.assert_close(a, b)


def test_generic_field_packed_queries():
    "Fields without packed methods are padded per batch element and gathered back."
    ball = BallField(rho=3.0, a=0.5, smooth=True)
    pts = torch.randn(9, 3, generator=torch.Generator().manual_seed(2))
    batch = torch.tensor([1, 0, 1, 1, 2, 0, 2, 2, 2])
    torch.testing.assert_close(query_field(ball, None, pts, batch)["density"], ball.density_at(None, pts))
    torch.testing.assert_close(query_density(ball, None, pts, batch), ball.density_at(None, pts))


def test_sphere_and_segments():
    o = torch.tensor([[0., 0., -4.], [0., 1.3, -4.], [0., 0., 0.]])
    d = torch.tensor([[0., 0., 1.], [0., 0., 1.], [0., 1., 0.]])
    near, far, hit = ray_sphere_intersect(o, d, 1.25)
    assert hit.tolist() == [True, False, True] and abs(near[0] - 2.75) < 1e-6 and abs(far[0] - 5.25) < 1e-6 and near[2] == 0
    near, far, hit = ray_segments(o, d, dataclasses.replace(RenderConfig(), bound_radius=1.25))
    assert hit.tolist() == [True, False, True] and near[1] == far[1] == 0 and abs(far[2] - 1.25) < 1e-6
    with pytest.raises(ValueError, match="bound_radius"): RenderConfig(bound_radius=-1.0)
    with pytest.raises(ValueError, match="min_transmittance"): RenderConfig(min_transmittance=1.0)


class PlainField:
    "A TriplaneField seen through the plain interface only (no packed methods)."
    def __init__(self, field): self.field = field
    def __call__(self, triplane, points, alpha=1.0): return self.field(triplane, points, alpha=alpha)
    def density_at(self, triplane, points): return self.field.density_at(triplane, points)


@pytest.mark.parametrize("method", ["forward_difference", "finite_difference"])
def test_packed_renderer_matches_plain_field_path(method):
    "Culling off: the atlas path of TriplaneField and the padded plain path give the same images and gradients."
    g = torch.Generator().manual_seed(3)
    field = TriplaneField(TriplaneFieldConfig.mini())
    tp0 = 0.5 * torch.randn(2, 3, 16, 16, 16, generator=g)
    cams = orbit_cameras(torch.tensor([0.0, 130.0]), torch.tensor([10.0, -20.0]), 3.3, 30.0)
    cfg = dataclasses.replace(RenderConfig.mini(), height=8, width=8, bound_radius=None, min_transmittance=0.0, normals=method,
                              empty_density=0.0)
    kw = dict(shading=("lambertian", "textureless"), background=torch.rand(2, 3, generator=g), alpha=0.5)
    res = []
    for f in (field, PlainField(field)):
        field.zero_grad(); tp = tp0.clone().requires_grad_(True)
        out = render(f, tp, cams, cfg, generator=torch.Generator().manual_seed(0), **kw)
        (out["rgb"].square().sum() + out["normal"].sum()).backward()
        res.append(([out[k].detach() for k in ("rgb", "opacity", "depth", "normal")], [tp.grad] + [p.grad.clone() for p in field.parameters()]))
    for a, b in zip(res[0][0], res[1][0]): torch.testing.assert_close(a, b, atol=2e-4, rtol=0)
    for a, b in zip(res[0][1], res[1][1]): torch.testing.assert_close(a, b, atol=5e-4 * b.abs().max().item(), rtol=1e-3)


class CompactBlob:
    "Smooth density with compact support within radius a of c (reaches 1.13 < 1.25), position-dependent albedo."
    def __init__(self, rho=8.0, a=0.9, centre=(0.1, -0.05, 0.2)): self.rho, self.a, self.c = rho, a, torch.tensor(centre)
    def density_at(self, triplane, points): return self.rho * (1 - ((points - self.c) ** 2).sum(-1) / self.a ** 2).clamp_min(0) ** 2
    def __call__(self, triplane, points, alpha=1.0): return dict(density=self.density_at(triplane, points), albedo=torch.sigmoid(3 * points))


def test_bounding_sphere_matches_box_on_field_inside_it():
    cams = sample_cameras(CameraConfig.mini(), 3, generator=torch.Generator().manual_seed(0))
    bg = torch.tensor([[0.2, 0.7, 0.1], [1.0, 1.0, 1.0], [0.0, 0.3, 0.9]])
    box = dataclasses.replace(RenderConfig.mini(), height=12, width=12, bound_radius=None, min_transmittance=0.0, normal_min_weight=0.0, empty_density=0.0,
                              n_samples=256, n_importance=128)
    with torch.no_grad():
        a = render(CompactBlob(), None, cams, box, shading="lambertian", background=bg, perturb=False)
        b = render(CompactBlob(), None, cams, dataclasses.replace(box, bound_radius=1.25), shading="lambertian", background=bg, perturb=False)
    miss = ~b["hit"][:, 0]
    assert miss.any() and (~miss).any()
    assert torch.equal(b["rgb"].permute(0, 2, 3, 1)[miss], bg[:, None, None].expand(3, 12, 12, 3)[miss])  # exactly the background
    assert b["opacity"][:, 0][miss].eq(0).all() and b["depth"][:, 0][miss].eq(0).all()
    for k in ("rgb", "opacity", "normal"): assert (a[k] - b[k]).abs().max() < 5e-3, k
    solid = (a["opacity"] > 0.5) & (b["opacity"] > 0.5)
    assert (a["depth"] - b["depth"])[solid].abs().max() < 1e-2


def test_early_termination_changes_nothing_visible():
    "min_transmittance=1e-4 skips fine samples behind an opaque ball; images and gradients barely change."
    o, d = rays_towards(torch.stack([torch.linspace(-0.5, 0.5, 60), torch.linspace(0.4, -0.4, 60), torch.zeros(60)], -1))
    outs = [render_rays(BallField(rho=50.0, a=0.6), None, o, d, dataclasses.replace(RenderConfig.mini(), min_transmittance=mt),
                        shading="lambertian", generator=torch.Generator().manual_seed(0)) for mt in (0.0, 1e-4)]
    for k in ("rgb", "opacity", "depth", "normal"): torch.testing.assert_close(outs[0][k], outs[1][k], atol=1e-3, rtol=0)
    t = torch.linspace(0, 1, 9)[None, :-1]
    dens = torch.tensor([[0., 0., 0., 200., 200., 0., 0., 0.]])
    tf, keep = fine_samples(t, torch.ones(1), dens, dataclasses.replace(RenderConfig(n_samples=8, n_importance=32), min_transmittance=1e-4), perturb=False)
    assert keep[tf < 0.5].all() and not keep[tf >= 0.5].any()


def test_all_rays_miss_and_mini_gradients():
    "Nothing inside the sphere: background only; and gradients reach the triplane and every MLP parameter with culling on."
    cams = orbit_cameras(torch.tensor([0.0, 90.0]), 0.0, 3.3, 45.0)
    field = TriplaneField(TriplaneFieldConfig.mini())
    away = dataclasses.replace(RenderConfig.mini(), height=4, width=4)
    o = torch.tensor([[[0.0, 3.0, -4.0]] * 5])
    d = torch.tensor([[[0.0, 0.0, 1.0]] * 5])
    out = render_rays(field, torch.zeros(1, 3, 16, 8, 8), o, d, away, background=torch.ones(1, 3))
    assert out["rgb"].eq(1).all() and out["opacity"].eq(0).all() and not out["hit"].any()
    g = torch.Generator().manual_seed(4)
    tp = (0.5 * torch.randn(2, 3, 16, 16, 16, generator=g)).requires_grad_(True)
    r = render(field, tp, cams, dataclasses.replace(RenderConfig.mini(), height=10, width=10), shading=("textureless", "albedo"), generator=g)
    (r["rgb"].mean() + r["depth"].mean()).backward()
    assert tp.grad.abs().sum() > 0 and all(p.grad is not None and p.grad.abs().sum() > 0 for p in field.parameters())


# ---------------------------------------------------------------- the numba lookup and one normal per ray (mini step speed)
from instant3d.field import atlas_lookup, triplane_atlas_hwc, sample_atlas, set_lookup, use_numba_lookup, LOOKUPS
from instant3d.render import NORMALS_AT


@pytest.fixture
def lookup():
    "Set the field's lookup for one test, restored afterwards."
    old = set_lookup("auto")
    yield set_lookup
    set_lookup(old)


def _lookup_pair(dtype, summed, B=3, C=5, H=8, W=12, n=40):
    g = torch.Generator().manual_seed(2)
    tp = torch.randn(B, 3, C, H, W, generator=g, dtype=torch.float64).to(dtype)
    pts = torch.randn(B * n, 3, generator=g, dtype=torch.float64) * 1.2
    pts[:4] = torch.tensor([[1.75, 0.3, -1.75], [1.8, -1.8, 0.0], [2.5, 0.1, 0.2], [0.0, 0.0, -3.0]])  # edge and outside
    grid = atlas_grid(pts.to(dtype), torch.arange(B).repeat_interleave(n), B, H, W, 1.75)
    w = torch.cos(torch.arange(B * n * 3 * C, dtype=dtype)).view(B * n, 3, C)
    res = []
    for fast in (False, True):
        t = tp.clone().requires_grad_(True)
        f = atlas_lookup(triplane_atlas_hwc(t), grid, summed) if fast else sample_atlas(triplane_atlas(t), grid)[0].permute(2, 1, 0)
        if summed and not fast: f = f.sum(1)
        f.backward(w.sum(1) if summed else w)
        res.append((f.detach(), t.grad))
    return res


@pytest.mark.parametrize("threads", [2, 1])  # 1: the serial kernels
@pytest.mark.parametrize("summed", [False, True])
def test_numba_lookup_matches_grid_sample(summed, threads):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-4)):
            (f0, g0), (f1, g1) = _lookup_pair(dtype, summed)
            torch.testing.assert_close(f1, f0, atol=tol, rtol=0)
            torch.testing.assert_close(g1, g0, atol=tol, rtol=0)
    finally: torch.set_num_threads(before)


@pytest.mark.parametrize("cfg", [TriplaneFieldConfig.mini(), TriplaneFieldConfig.official(), dataclasses.replace(TriplaneFieldConfig.mini(), hidden=24)])
def test_packed_field_same_with_either_lookup(cfg, lookup):
    "First layer per texel (mini), mean of planes (official), per-point first layer with concatenation (hidden 24)."
    g = torch.Generator().manual_seed(4)
    f = TriplaneField(cfg).double()
    tp0 = torch.randn(3, 3, cfg.channels, 8, 8, generator=g, dtype=torch.float64)
    pts, b = torch.randn(300, 3, generator=g, dtype=torch.float64), torch.randint(0, 3, (300,), generator=g)
    res = []
    for name in ("grid_sample", "numba"):
        lookup(name); f.zero_grad(); tp = tp0.clone().requires_grad_(True)
        assert use_numba_lookup(tp, pts) == (name == "numba")
        o = f.forward_packed(tp, pts, b, alpha=0.5)
        (o["density"].sum() + o["albedo"].square().sum()).backward()
        res.append(([o["density"], o["albedo"]], [tp.grad] + [p.grad.clone() for p in f.parameters()]))
    for a, c in zip(res[0][0] + res[0][1], res[1][0] + res[1][1]): torch.testing.assert_close(c, a, atol=1e-10, rtol=1e-10)


def test_lookup_choice_and_fallbacks(lookup):
    with pytest.raises(ValueError, match="'bilinear'"): set_lookup("bilinear")
    assert LOOKUPS == ("auto", "numba", "grid_sample")
    tp = torch.zeros(1, 3, 4, 4, 4)
    pts = torch.zeros(5, 3, requires_grad=True)
    assert not use_numba_lookup(tp, pts)  # gradients to the points (autograd normals): grid_sample
    assert use_numba_lookup(tp, pts.detach()) and not use_numba_lookup(tp.half(), pts.detach())
    lookup("grid_sample"); assert not use_numba_lookup(tp, pts.detach())
    with pytest.raises(ValueError, match="float32/float64 CPU atlas"): atlas_lookup(torch.zeros(4, 4), torch.zeros(3, 2, 2))
    # autograd normals through the packed field still work (they need the point gradient)
    field = TriplaneField(TriplaneFieldConfig.mini())
    t = 0.5 * torch.randn(1, 3, 16, 8, 8, generator=torch.Generator().manual_seed(0))
    n = estimate_normals(field, t, torch.randn(20, 3) * 0.5, "autograd", batch=torch.zeros(20, dtype=torch.long))
    fd = estimate_normals(field, t, torch.randn(20, 3) * 0.5, "finite_difference", eps=1e-3, batch=torch.zeros(20, dtype=torch.long))
    assert n.shape == fd.shape == (20, 3) and torch.isfinite(n).all()


def test_normals_at_defaults():
    assert RenderConfig.paper().normals_at == RenderConfig.official().normals_at == "samples"  # released: per-sample normals
    assert RenderConfig.mini().normals_at == "surface" and NORMALS_AT == ("samples", "surface")
    assert config_from_dict(RenderConfig, {k: v for k, v in config_to_dict(RenderConfig.mini()).items() if k != "normals_at"}).normals_at == "samples"


def test_surface_normals_agree_with_per_sample_on_sharp_surfaces():
    o, d = rays_towards(torch.stack([torch.linspace(-0.45, 0.45, 15).repeat(15), torch.linspace(-0.45, 0.45, 15).repeat_interleave(15), torch.zeros(225)], -1))
    at = lambda w: dataclasses.replace(RenderConfig.mini(), normals_at=w, background="white")
    worst = []
    for rho in (30.0, 300.0):
        ball = BallField(rho=rho, a=0.5, smooth=True)
        alb = [render_rays(ball, None, o, d, at(w), shading="albedo", perturb=False)["rgb"] for w in NORMALS_AT]
        assert torch.equal(alb[0], alb[1])
        lam = {w: render_rays(ball, None, o, d, at(w), shading="lambertian", perturb=False) for w in NORMALS_AT}
        worst.append((lam["surface"]["rgb"] - lam["samples"]["rgb"]).abs().max().item())
        s = lam["surface"]
        cos = F.cosine_similarity(s["normal"], F.normalize(o + s["depth"][..., None] * d, dim=-1), dim=-1)
        assert cos[s["opacity"] > 0.5].min() > 0.99
    assert worst[1] < 0.015 and worst[1] < worst[0] < 0.06  # closer as the surface sharpens


def test_surface_normals_shading_modes_and_gradients():
    g = torch.Generator().manual_seed(0)
    field = TriplaneField(TriplaneFieldConfig.mini())
    tp = (0.5 * torch.randn(4, 3, 16, 16, 16, generator=g)).requires_grad_(True)
    cams = sample_cameras(CameraConfig.mini(), 4, generator=g)
    cfg = dataclasses.replace(RenderConfig.mini(), height=10, width=10)
    assert cfg.normals_at == "surface"
    bg = torch.rand(4, 3, generator=g)
    out = render(field, tp, cams, cfg, shading=("albedo", "lambertian", "textureless", "normal"), background=bg, generator=g)
    op, rgb = out["opacity"], out["rgb"]
    (rgb.mean() + out["normal"].mean()).backward()
    assert tp.grad.abs().sum() > 0 and all(p.grad.abs().sum() > 0 for p in field.parameters())
    # textureless: grey levels (equal channels) over the background; normal: (n + 1) / 2 premultiplied by the opacity
    tl = (rgb[2] - (1 - op[2]) * bg[2][:, None, None]).detach()
    torch.testing.assert_close(tl[0], tl[1]); torch.testing.assert_close(tl[1], tl[2])
    nm = (rgb[3] - (1 - op[3]) * bg[3][:, None, None]).detach()
    n_unit = out["normal"][3].detach() / op[3].detach().clamp_min(1e-10)
    torch.testing.assert_close(nm, op[3].detach() * (n_unit + 1) / 2, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- the renderer's three modules
def test_render_parts_importable_from_render():
    "The names of instant3d.rays and instant3d.shading stay importable from instant3d.render, as the same objects."
    import instant3d.rays, instant3d.shading, instant3d.render
    for m in (instant3d.rays, instant3d.shading):
        for name in m.__all__:
            assert getattr(instant3d.render, name) is getattr(m, name), name
    from instant3d.render import BACKGROUNDS, shade, SHADING_MODES, composite_weights, estimate_normals  # as importers use them
    assert shade is instant3d.shading.shade and composite_weights is instant3d.rays.composite_weights


def test_rays_and_shading_import_without_the_renderer():
    "Data flow: rays -> shading -> render; the two lower modules never import the renderer (fresh process)."
    import subprocess, sys
    code = "import sys, instant3d.rays, instant3d.shading; assert 'instant3d.render' not in sys.modules, 'render imported'"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
