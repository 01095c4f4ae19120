"Camera distribution, poses and rays: contracts other modules rely on (instant3d.cameras)."
import dataclasses, json, math
import pytest, torch
from instant3d.cameras import (CameraConfig, Cameras, RELEASED_SECTORS, VIEW_NAMES, sample_cameras, look_at, get_rays,
                               project_points, orbit_cameras, turntable, four_views, view_index, view_labels, focal_px)
from instant3d.conventions import camera_position, azimuth_elevation_of, config_to_dict, config_from_dict

def gen(seed): return torch.Generator().manual_seed(seed)

def assert_rigid(c2w):
    R = c2w[:, :3, :3]
    torch.testing.assert_close(R.transpose(1, 2) @ R, torch.eye(3).expand_as(R), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(len(R)), atol=1e-5, rtol=0)
    assert (c2w[:, 3] == torch.tensor([0., 0., 0., 1.])).all()

def in_sector(az, sectors): return torch.stack([(az >= lo) & (az < hi) for _, lo, hi, _ in sectors], -1)

@pytest.mark.parametrize("cfg", [CameraConfig.paper(), CameraConfig.official(), CameraConfig.mini()])
def test_config_json_round_trip(cfg):
    assert config_from_dict(CameraConfig, json.loads(json.dumps(config_to_dict(cfg)))) == cfg

def test_sector_frequencies_match_probabilities():
    cfg = dataclasses.replace(CameraConfig.official(), per_batch_sector=False)
    n = 20000
    m = in_sector(sample_cameras(cfg, n, gen(0)).azimuth_deg, cfg.sectors)
    assert (m.sum(-1) == 1).all()  # released sectors tile the circle without overlap
    for (name, _, _, p), f in zip(cfg.sectors, m.float().mean(0).tolist()):
        assert abs(f - p) < 4 * math.sqrt(p * (1 - p) / n), (name, f, p)

def test_released_sectors_are_the_translated_released_table():
    # released phi = our azimuth + 180: front [135, 225) 0.4, [45, 135) 0.2, [225, 315) 0.2, back [315, 360) + [0, 45) 0.2
    phi = {(round((lo + 180) % 360), round((hi + 180 - 1e-9) % 360 + 1e-9)): p for _, lo, hi, p in RELEASED_SECTORS}
    assert phi == {(135, 225): 0.4, (225, 315): 0.2, (45, 135): 0.2, (315, 360): 0.1, (0, 45): 0.1}

def test_per_batch_sector_gives_one_sector_per_batch():
    cfg = CameraConfig.official()
    assert cfg.per_batch_sector
    seen = set()
    for s in range(60):
        k = in_sector(sample_cameras(cfg, 12, gen(s)).azimuth_deg, cfg.sectors).float().argmax(-1)
        assert len(k.unique()) == 1
        seen.add(k[0].item())
    assert len(seen) >= 4  # but batches differ
    k = in_sector(sample_cameras(dataclasses.replace(cfg, per_batch_sector=False), 64, gen(0)).azimuth_deg, cfg.sectors).float().argmax(-1)
    assert len(k.unique()) > 1

@pytest.mark.parametrize("cfg", [CameraConfig.paper(), CameraConfig.official(), CameraConfig.mini()])
def test_ranges_respected(cfg):
    c = sample_cameras(cfg, 4000, gen(1))
    assert len(c) == 4000 and c.c2w.shape == (4000, 4, 4)
    for v, (lo, hi) in [(c.radius, cfg.radius_range), (c.fovy_deg, cfg.fovy_deg_range), (90 - c.elevation_deg, cfg.polar_deg_range)]:
        assert v.min() >= lo - 1e-4 and v.max() <= hi + 1e-4
        assert v.min() < lo + 0.05 * (hi - lo) and v.max() > hi - 0.05 * (hi - lo)  # the whole range is used
    assert c.azimuth_deg.min() >= -180 and c.azimuth_deg.max() < 180
    az, el, r = azimuth_elevation_of(c.position)  # the stored angles are those of the matrices
    torch.testing.assert_close(el, c.elevation_deg, atol=1e-3, rtol=0)
    torch.testing.assert_close(r, c.radius, atol=1e-5, rtol=1e-5)
    assert ((az - c.azimuth_deg + 180) % 360 - 180).abs().max() < 1e-3
    assert_rigid(c.c2w)

def test_seeded_generator_reproducible():
    a, b = sample_cameras(CameraConfig.official(), 32, gen(7)), sample_cameras(CameraConfig.official(), 32, gen(7))
    for k in ("c2w", "azimuth_deg", "elevation_deg", "radius", "fovy_deg"):
        torch.testing.assert_close(getattr(a, k), getattr(b, k), atol=0, rtol=0)
    assert not torch.equal(a.c2w, sample_cameras(CameraConfig.official(), 32, gen(8)).c2w)

@pytest.mark.parametrize("kw,value", [
    (dict(radius_range=(3.6, 3.0)), "(3.6, 3.0)"), (dict(radius_range=(-1.0, 3.0)), "(-1.0, 3.0)"),
    (dict(fovy_deg_range=(0.0, 80.0)), "(0.0, 80.0)"), (dict(fovy_deg_range=(70.0, 185.0)), "(70.0, 185.0)"),
    (dict(polar_deg_range=(25.0, 190.0)), "(25.0, 190.0)"), (dict(sectors=(("a", -180.0, 180.0, 0.5),)), "0.5"),
    (dict(sectors=(("a", -200.0, 180.0, 1.0),)), "-200.0"), (dict(sectors=(("a", 10.0, 10.0, 1.0),)), "10.0"),
    (dict(sectors=(("a", -180.0, 180.0, -1.0), ("b", -180.0, 180.0, 2.0))), "-1.0"),
    (dict(front_half_width_deg=0.0), "0.0"), (dict(overhead_elevation_deg=120.0), "120.0")])
def test_validation_errors_name_the_value(kw, value):
    with pytest.raises(ValueError) as e: CameraConfig(**kw)
    assert value in str(e.value) and list(kw)[0] in str(e.value)

def test_bad_call_arguments():
    for bad in (0, -3, 2.0):
        with pytest.raises(ValueError, match=repr(bad)): sample_cameras(CameraConfig.paper(), bad)
    with pytest.raises(ValueError): get_rays(four_views(), 0, 8)
    with pytest.raises(ValueError): look_at(torch.zeros(2, 3))  # eye == target
    with pytest.raises(ValueError): orbit_cameras(0.0, 0.0, -1.0, 60.0)
    with pytest.raises(ValueError): Cameras(torch.eye(4).expand(2, 4, 4), torch.zeros(3), torch.zeros(2), torch.ones(2), torch.ones(2))

def test_look_at_orthonormal_det_one_including_poles():
    eyes = torch.cat([camera_position(torch.rand(200, generator=gen(2)) * 360 - 180, torch.rand(200, generator=gen(3)) * 180 - 90, 3.3),
                      torch.tensor([[0., 3., 0.], [0., -2., 0.], [0., 3.3, 1e-9]])])
    M = look_at(eyes)
    assert_rigid(M)
    assert torch.isfinite(M).all()
    torch.testing.assert_close(M[:, :3, 3], eyes)
    torch.testing.assert_close(M[:, :3, 2], eyes / eyes.norm(dim=-1, keepdim=True), atol=1e-6, rtol=0)  # +z = backward
    # straight down / straight up: the limit of the front camera (image up towards the back, +z / towards the front, -z)
    torch.testing.assert_close(M[-3, :3, 1], torch.tensor([0., 0., 1.])); torch.testing.assert_close(M[-2, :3, 1], torch.tensor([0., 0., -1.]))
    torch.testing.assert_close(M[-3, :3, 0], torch.tensor([-1., 0., 0.])); torch.testing.assert_close(M[-2, :3, 0], torch.tensor([-1., 0., 0.]))
    assert_rigid(look_at(torch.tensor([[0., 0., -3.]]), up=(0., 0., 1.)))  # custom up along the view axis

def test_front_camera_frame():
    c = orbit_cameras(0.0, 0.0, 3.0, 60.0)
    torch.testing.assert_close(c.c2w[0], torch.tensor([[-1., 0., 0., 0.], [0., 1., 0., 0.], [0., 0., -1., -3.], [0., 0., 0., 1.]]))

def test_rays_unit_centre_and_round_trip():
    cams = sample_cameras(CameraConfig.paper(), 5, gen(4))
    H, W = 31, 41
    o, d = get_rays(cams, H, W)
    assert o.shape == d.shape == (5, H, W, 3)
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(5, H, W))
    torch.testing.assert_close(d[:, H // 2, W // 2], -cams.position / cams.radius[:, None], atol=1e-6, rtol=0)
    # vertical angle of the top-centre ray = atan((H/2 - 0.5) / f), approaching fovy/2
    ang = torch.rad2deg(torch.acos((d[:, 0, W // 2] * d[:, H // 2, W // 2]).sum(-1).clamp(max=1)))
    torch.testing.assert_close(ang, torch.rad2deg(torch.atan((H / 2 - 0.5) / focal_px(cams.fovy_deg, H))), atol=2e-3, rtol=0)
    # project a point on each pixel's ray: lands at that pixel's centre
    t = 0.5 + 5 * torch.rand(5, H, W, 1, generator=gen(5))
    uv, depth = project_points(cams, (o + t * d).reshape(5, -1, 3), H, W)
    jj, ii = torch.meshgrid(torch.arange(W) + 0.5, torch.arange(H) + 0.5, indexing="xy")
    torch.testing.assert_close(uv, torch.stack([jj, ii], -1).reshape(1, -1, 2).expand(5, -1, -1), atol=2e-3, rtol=0)
    assert (depth > 0).all()

def test_pixel_orientation():
    _, d = get_rays(four_views(), 4, 6)
    assert (d[0, 0, :, 1] > d[0, -1, :, 1]).all()  # row 0 at the top
    assert (d[0, :, -1, 0] < d[0, :, 0, 0]).all()  # front camera: image right = world -x

def test_cameras_indexing_and_device():
    c = turntable(10)
    assert len(c) == 10 and len(c[3]) == 1 and len(c[-1]) == 1 and len(c[2:5]) == 3
    assert len(c[torch.tensor([0, 0, 1])]) == 3 and len(c[c.azimuth_deg >= 0]) == 5
    assert c.to("cpu").device.type == "cpu"
    with pytest.raises(IndexError): c[10]

def test_turntable_and_four_views():
    t = turntable(121)
    assert len(t) == 121 and t.azimuth_deg[0] == 0 and t.azimuth_deg[1] > 0
    torch.testing.assert_close(t.radius, torch.full((121,), 4.29)); assert (t.fovy_deg == 75).all() and (t.elevation_deg == 0).all()
    f = four_views(CameraConfig.paper())
    assert f.azimuth_deg.tolist() == [0., 90., -180., -90.] and (f.elevation_deg == 15).all()
    torch.testing.assert_close(f.radius, torch.full((4,), 3.3)); torch.testing.assert_close(f.fovy_deg, torch.full((4,), 75.))
    torch.testing.assert_close(f.position[1], camera_position(90., 15., 3.3))
    assert f.position[1, 0] < 0  # left view: camera on -x

def test_view_labels():
    az = torch.tensor([0., -45., 45., 90., -135., 135., -180., 179.9, 10.])
    el = torch.tensor([0.] * 8 + [60.])
    assert view_labels(az, el) == ["front", "front", "side", "side", "side", "back", "back", "back", "overhead"]
    assert view_index(az, el).tolist() == [VIEW_NAMES.index(v) for v in view_labels(az, el)]
    assert view_labels(torch.tensor([200.]), torch.tensor([0.])) == ["back"]  # wrapped
    c = orbit_cameras(torch.tensor([0., 90.]), torch.tensor([0., 70.]), 3.0, 60.0)
    assert c.labels() == ["front", "overhead"] and c.labels((45.0, 75.0)) == ["front", "side"]
    assert c.labels(dataclasses.replace(CameraConfig.paper(), overhead_elevation_deg=80.0)) == ["front", "side"]
