"The mini world: grammar and captions (mini.world), ground-truth renderer (mini.render), Janus detector (mini.janus)."
import dataclasses, json, math
import pytest, torch
from instant3d.cameras import CameraConfig, orbit_cameras, sample_cameras
from instant3d.conventions import config_from_dict, config_to_dict, wrap_azimuth_deg
from instant3d.mini.world import (BODIES, COLOURS, HATS, HAT_COLOURS, PART_NAMES, SUPPORTS, GADGETS, VIEW_SUFFIXES, WORLD_WORDS,
                                  Scene, WorldConfig, all_scenes, caption_with_view, load_split, parse_prompt, prompts,
                                  sample_dataset, save_split, split_indices, split_scenes, split_view_suffix)
from instant3d.mini.render import render_scenes, scene_primitives, scene_sdf
from instant3d.mini.janus import front_feature_visible, janus_rate

def gen(seed): return torch.Generator().manual_seed(seed)

@pytest.fixture(scope="module")
def random_renders():
    "300 random scenes and cameras of the mini world, rendered at 32x32."
    cfg = WorldConfig.mini()
    scenes, cams, caps = sample_dataset(cfg, 300, gen(11))
    return scenes, cams, caps, render_scenes(scenes, cams, cfg=cfg)

# grammar and split

def test_grammar_counts_and_no_null():
    ps = prompts(WorldConfig.mini())
    assert len(ps) == 6 * 5 * 3 * 2 * 9 == 1620 and len(set(ps)) == 1620
    assert all("null" not in p and "  " not in p and p == p.strip() for p in ps)
    assert sum(p.startswith("an orange ") for p in ps) == 270 and not any(p.startswith("a orange") for p in ps)
    scenes = all_scenes()
    assert sum(s.support is None for s in scenes) == 540 and sum(s.hat is None for s in scenes) == 180
    assert sum(" sitting " in p for p in ps) == 1080 and sum("wearing a scarf" in p for p in ps) == 810
    assert len(prompts(WorldConfig.tiny())) == 3 * 3 * 3 * 2 * 3

def test_split_sizes_disjoint_and_deterministic():
    cfg = WorldConfig.mini()
    train, test = prompts(cfg, "train"), prompts(cfg, "test")
    assert (len(train), len(test)) == (972, 648) and not set(train) & set(test)
    assert sorted(train + test) == sorted(prompts(cfg))
    assert train == prompts(WorldConfig.mini(), "train") and split_indices(cfg) == split_indices(WorldConfig.paper())  # size does not matter
    assert train != prompts(WorldConfig(seed=1), "train")
    t2 = prompts(dataclasses.replace(cfg, train_fraction=0.5), "train")
    assert len(t2) == 810

def test_split_file_round_trip(tmp_path):
    cfg = WorldConfig.tiny()
    path = save_split(cfg, tmp_path / "split.json")
    c2, sp = load_split(path)
    assert c2 == cfg and sp["test"] == prompts(cfg, "test")
    d = json.loads(path.read_text()); d["train"] = d["train"][1:]
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="train prompts"): load_split(path)

def test_parse_round_trip_on_all_renderable_scenes():
    for cfg in (WorldConfig.mini(), dataclasses.replace(WorldConfig.mini(), hat_colours=tuple(COLOURS))):
        for s in all_scenes(cfg):
            assert parse_prompt(s.caption()) == s

@pytest.mark.parametrize("bad", ["a red cube wearing a null", "a red torus", "a red cube, front view", "A red cube", "", "an red cube", None])
def test_parse_rejects_unknown_prompts(bad):
    with pytest.raises(ValueError, match="parse_prompt"):
        parse_prompt(bad)

@pytest.mark.parametrize("kw", [dict(colour="pink", body="cube"), dict(colour="red", body="torus"), dict(colour="red", body="cube", hat="party hat"),
                                dict(colour="red", body="cube", hat_colour="red"), dict(colour="red", body="cube", support="table")])
def test_scene_validation(kw):
    with pytest.raises(ValueError, match="Scene"):
        Scene(**kw)

def test_config_presets_round_trip_and_validation():
    for c in (WorldConfig.paper(), WorldConfig.official(), WorldConfig.mini(), WorldConfig.tiny()):
        assert config_from_dict(WorldConfig, json.loads(json.dumps(config_to_dict(c)))) == c
        assert c.camera == CameraConfig.mini()
    for kw in (dict(seed=1.5), dict(train_fraction=0), dict(supersample=5), dict(hats=("beret",)), dict(march_steps=4), dict(chunk_rays=10)):
        with pytest.raises(ValueError, match=f"WorldConfig.{next(iter(kw))}="):
            WorldConfig(**kw)
    with pytest.raises(ValueError, match="split"): prompts(WorldConfig.mini(), "val")

# view suffixes and tokens

def test_caption_with_view_labels():
    cams = orbit_cameras(torch.tensor([0.0, -44.0, 45.0, 134.0, 135.0, 180.0, -135.0, 0.0]), torch.tensor([0.0] * 7 + [60.0]), 3.3, 45.0)
    caps = caption_with_view(Scene("red", "cube"), cams)
    assert [split_view_suffix(c)[1] for c in caps] == ["front", "front", "side", "side", "back", "back", "side", "overhead"]  # half-open, as released
    assert all(split_view_suffix(c)[0] == "a red cube" for c in caps)
    two = caption_with_view(["a red cube", "a blue cone"], cams[:2])
    assert two == ["a red cube, front view", "a blue cone, front view"]
    with pytest.raises(ValueError, match="one per camera"): caption_with_view(["a red cube"] * 3, cams[:2])

def test_world_words_are_single_tokens():
    from instant3d.text import build_word_tokenizer
    tok = build_word_tokenizer(WORLD_WORDS, model_max_length=32)
    longest = max((p + s for p in prompts() for s in VIEW_SUFFIXES.values()), key=lambda p: len(p.replace(",", " ,").split()))
    n_words = len(longest.replace(",", " ,").split())
    assert n_words == 20 and len(tok(longest).input_ids) == n_words + 2

def test_sample_dataset_is_reproducible_and_respects_split():
    cfg = WorldConfig.mini()
    a = sample_dataset(cfg, 16, gen(0), split="test")
    b = sample_dataset(cfg, 16, gen(0), split="test")
    assert a[2] == b[2] and torch.equal(a[1].c2w, b[1].c2w)
    assert {s.caption() for s in a[0]} <= set(prompts(cfg, "test"))
    assert [split_view_suffix(c)[0] for c in a[2]] == [s.caption() for s in a[0]]
    with pytest.raises(ValueError, match="n="): sample_dataset(cfg, 0)

# renderer

@pytest.mark.parametrize("size,ss", [(32, 2), (64, 1), (40, 3)])
def test_render_shapes_and_ranges(size, ss):
    scenes, cams, _ = sample_dataset(WorldConfig.mini(), 5, gen(size))
    out = render_scenes(scenes, cams, size=size, supersample=ss, background=torch.rand(5, 3, generator=gen(1)))
    assert out["rgb"].shape == out["albedo"].shape == out["normal"].shape == (5, 3, size, size)
    assert out["opacity"].shape == out["depth"].shape == out["part"].shape == (5, 1, size, size)
    assert out["front_pixels"].shape == out["front_visible"].shape == (5,) and out["part"].dtype == torch.long
    for k in ("rgb", "albedo", "opacity"): assert out[k].min() >= 0 and out[k].max() <= 1 + 1e-6, k
    assert out["part"].min() >= 0 and out["part"].max() < len(PART_NAMES)
    fg = out["opacity"] > 0
    d = out["depth"][fg]
    assert (d > 2.0).all() and (d < 4.9).all()  # camera radius 3.0-3.6, scenes within radius 1.2
    assert (out["depth"][~fg] == 0).all() and (out["opacity"].mean((1, 2, 3)) > 0.05).all()
    assert ((out["part"] > 0) == (out["opacity"] > 0.5)).float().mean() > 0.97

def test_render_errors():
    cams = orbit_cameras(torch.tensor([0.0, 90.0]), 0.0, 3.3, 45.0)
    with pytest.raises(ValueError, match="one per camera"): render_scenes(["a red cube"] * 3, cams)
    with pytest.raises(ValueError, match="background"): render_scenes("a red cube", cams, background="blue")
    with pytest.raises(ValueError, match="background"): render_scenes("a red cube", cams, background=torch.ones(3, 3))
    with pytest.raises(ValueError, match="size"): render_scenes("a red cube", cams, size=4)
    with pytest.raises(ValueError, match="parse_prompt"): render_scenes("a red torus", cams)

def test_batched_equals_single_and_is_deterministic():
    scenes, cams, _ = sample_dataset(WorldConfig.mini(), 6, gen(5))
    a, b = render_scenes(scenes, cams), render_scenes(scenes, cams)
    assert all(torch.equal(a[k], b[k]) for k in a)
    one = render_scenes(scenes[2], cams[2])
    torch.testing.assert_close(one["rgb"], a["rgb"][2:3]); assert torch.equal(one["part"], a["part"][2:3])

def test_front_visible_from_front_hidden_from_back_for_every_body_and_support():
    scenes = [Scene("blue", b, s, g, h, "green" if h else None) for b in BODIES for s in (None, *SUPPORTS) for g in (None, "scarf")
              for h in (None, *HATS)]
    for el in (-20.0, 0.0, 30.0, 59.0):
        for az, expect in ((0.0, True), (20.0, True), (-40.0, True), (180.0, False), (140.0, False), (-140.0, False)):
            cams = orbit_cameras(torch.full((len(scenes),), az), el, 3.6, 50.0)
            out = render_scenes(scenes, cams)
            assert (out["front_visible"] == expect).all(), (az, el, [s.caption() for s, v in zip(scenes, out["front_visible"]) if v != expect])

def test_front_pixels_are_the_nose():
    out = render_scenes(Scene("red", "cube"), orbit_cameras(torch.tensor([0.0]), 0.0, 3.3, 45.0), size=64)
    nose = out["part"][0, 0] == PART_NAMES.index("front")
    assert out["front_pixels"].item() <= nose.sum().item() and nose.sum() >= 20
    ys, xs = nose.nonzero(as_tuple=True)
    assert abs(xs.float().mean().item() - 31.5) < 1.5  # centred left-right in the front view
    rgb = out["albedo"][0][:, nose].mean(1)
    assert rgb[0] < 0.2 and rgb[1] > 0.6 and rgb[2] > 0.6  # cyan

def test_scene_sdf_signs():
    s = [Scene("red", "sphere"), Scene("red", "cube", "stone")]
    pts = torch.tensor([[[0.0, -0.12, 0.0], [0.0, 1.5, 0.0]], [[0.0, -0.12, 0.0], [0.0, -0.7, 0.6]]])
    d, part = scene_sdf(s, pts)
    torch.testing.assert_close(d[0], torch.tensor([-0.6, 1.02]), atol=1e-4, rtol=0)  # sphere of radius 0.6 at y = -0.12
    assert (d[:, 0] < 0).all() and d[0, 1] > 0 and part[1, 1] == PART_NAMES.index("support") and d[1, 1] < 0
    with pytest.raises(ValueError, match="points"): scene_sdf(s, pts[0])
    assert scene_primitives(s)["active"].sum().item() == 5

# detector

def test_detector_matches_ground_truth(random_renders):
    _, cams, _, out = random_renders
    vis, score = front_feature_visible(out["rgb"])
    gt = out["front_visible"]
    az = wrap_azimuth_deg(cams.azimuth_deg).abs()
    acc = lambda m: (vis[m] == gt[m]).float().mean().item()
    assert acc(az >= 0) >= 0.98 and acc(az < 45) >= 0.99 and acc(az >= 135) >= 0.99
    assert gt[az < 45].all() and not gt[az >= 135].any()
    assert score.shape == (300,) and (score >= 0).all() and (score <= 1).all()

def test_detector_works_on_other_backgrounds_and_sizes():
    scenes = [Scene(c, b) for c in ("green", "blue", "purple") for b in ("sphere", "cube")]
    cams = orbit_cameras(torch.zeros(6), 10.0, 3.3, 45.0)
    for bg in ("black", "grey"):
        for size in (32, 64):
            assert front_feature_visible(render_scenes(scenes, cams, size=size, background=bg)["rgb"])[0].all()
    back = orbit_cameras(torch.full((6,), 180.0), 10.0, 3.3, 45.0)
    assert not front_feature_visible(render_scenes(scenes, back, background="black")["rgb"])[0].any()
    with pytest.raises(ValueError): front_feature_visible(torch.rand(2, 4, 8, 8))

def test_janus_rate(random_renders):
    scenes, cams, _, out = random_renders
    assert janus_rate(out["rgb"], cams.azimuth_deg) == 0.0
    front = render_scenes(scenes[:10], orbit_cameras(torch.zeros(10), 10.0, 3.3, 45.0))["rgb"]
    assert janus_rate(front, torch.full((10,), 180.0)) == 1.0  # front views passed off as back views: all Janus
    with pytest.raises(ValueError, match="no back views"): janus_rate(front, torch.zeros(10))
    with pytest.raises(ValueError, match="azimuths"): janus_rate(front, torch.zeros(3))

# world versions

def test_world_version_default_old_configs_and_labels():
    from instant3d.mini.world import WORLD_VERSIONS, world_label
    assert WorldConfig().version == WorldConfig.mini().version == WorldConfig.tiny().version == "v1"
    old = config_to_dict(WorldConfig.mini()); del old["version"]  # saved before versions existed
    assert config_from_dict(WorldConfig, old) == WorldConfig.mini() and world_label(old) == "world v1"
    v2 = WorldConfig.mini("v2")
    assert config_from_dict(WorldConfig, json.loads(json.dumps(config_to_dict(v2)))) == v2
    assert world_label(v2) == "world v2" and set(WORLD_VERSIONS) == {"v1", "v2", "v3", "v4"}
    with pytest.raises(ValueError, match="WorldConfig.version='v9'"): WorldConfig(version="v9")
    with pytest.raises(ValueError, match="v9"): world_label({"version": "v9"})
    assert prompts(v2) == prompts(WorldConfig.mini()) and prompts(v2, "test") == prompts(WorldConfig.mini(), "test")

def test_v1_renders_are_unchanged_by_the_version_switch():
    "World v1 renders exactly as before v2 existed: v2 only changes the front feature's primitive."
    scenes, cams, _ = sample_dataset(WorldConfig.mini(), 6, gen(21))
    a, b = render_scenes(scenes, cams), render_scenes(scenes, cams, cfg=WorldConfig.mini("v1"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = render_scenes(scenes, cams, cfg=WorldConfig.mini("v2"))
    other = (a["part"] != PART_NAMES.index("front")) & (c["part"] != PART_NAMES.index("front"))
    assert ((a["rgb"] - c["rgb"]).abs().amax(1, keepdim=True)[other] < 1e-4).float().mean() > 0.99
    p1, p2 = scene_primitives(scenes), scene_primitives(scenes, "v2")
    body = torch.arange(p1["part"].shape[1]) != 1
    assert torch.equal(p1["params"][:, body], p2["params"][:, body]) and not torch.equal(p1["params"], p2["params"])
    with pytest.raises(ValueError, match="version"): scene_primitives(scenes, "v0")

def test_v2_face_patch_front_only_and_large():
    v2 = WorldConfig.mini("v2")
    scenes = [Scene("blue", b, s, g, h, "green" if h else None) for b in BODIES for s in (None, *SUPPORTS) for g in (None, "scarf")
              for h in (None, *HATS)]
    for el in (-20.0, 0.0, 30.0, 45.0):  # above 50 deg a scarf can hide the patch on a flat front (see nbs/23_world_render)
        for az, expect in ((0.0, True), (30.0, True), (-40.0, True), (180.0, False), (140.0, False), (-135.0, False)):
            cams = orbit_cameras(torch.full((len(scenes),), az), el, 3.6, 50.0)
            out = render_scenes(scenes, cams, cfg=v2)
            assert (out["front_visible"] == expect).all(), (az, el)
            if not expect: assert (out["part"] != PART_NAMES.index("front")).all()
    straight = render_scenes([Scene("red", b) for b in BODIES], orbit_cameras(torch.zeros(5), 10.0, 3.3, 45.0), cfg=v2)
    for b, part in zip(BODIES, straight["part"]):
        face, body = (part == 2).sum().item(), (part == 1).sum().item()
        assert face >= 25 and face / (face + body) > 0.2, (b, face, body)  # a clear share of the front silhouette
    rgb = straight["albedo"][0][:, straight["part"][0, 0] == 2].mean(1)
    assert rgb[0] < 0.2 and rgb[1] > 0.6 and rgb[2] > 0.6  # cyan, the colour nothing else uses

# the teacher's data: the front-bias knob

def test_teacher_front_bias_knob_changes_the_data_as_stated():
    from instant3d.cameras import VIEW_NAMES
    from instant3d.mini.teacher import TeacherConfig, batch_captions, render_batch
    def shares(cfg, n=1500):
        g = gen(0)
        small = dataclasses.replace(cfg, sample_size=16, world=dataclasses.replace(cfg.world, image_size=16, supersample=1))
        _, p, v = render_batch(small, n, g)
        rows = batch_captions(p, v, cfg, g)
        return ((v == VIEW_NAMES.index("front")).float().mean().item(), (v == VIEW_NAMES.index("back")).float().mean().item(),
                ((rows > 0) & ((rows - 1) % 5 != 0)).float().mean().item())
    shipped = TeacherConfig.mini()
    assert shipped.camera is None and shipped.plain_caption_prob == 0.2 and shipped.world.version == "v1"
    f0, b0, w0 = shares(TeacherConfig.v2())
    f1, b1, w1 = shares(TeacherConfig.v2(biased=True))
    assert abs(f0 - 0.23) < 0.04 and abs(b0 - 0.23) < 0.04 and abs(w0 - 0.72) < 0.04  # uniform azimuth, 80 % view words
    assert abs(f1 - 0.55) < 0.05 and abs(b1 - 0.09) < 0.03 and abs(w1 - 0.09) < 0.03  # front-biased, 10 % view words
    assert TeacherConfig.v2(biased=True).world == TeacherConfig.v2().world == WorldConfig.mini("v2")

def test_v2_face_patch_over_the_camera_distribution():
    from instant3d.cameras import view_index
    v2 = WorldConfig.mini("v2")
    scenes, cams, _ = sample_dataset(v2, 400, gen(31))
    out = render_scenes(scenes, cams, cfg=v2)
    v = view_index(cams.azimuth_deg, cams.elevation_deg)
    assert out["front_visible"][v == 0].float().mean() >= 0.99 and not out["front_visible"][v == 2].any()

def test_v3_and_v4_put_the_face_where_their_rule_says():
    "World v3: a face only on FACED_BODIES; world v4: only on smiling scenes, whose captions carry the word; ground truth agrees."
    from instant3d.mini.world import FACED_BODIES, has_face
    from instant3d.mini.janus import cameras_with_view
    v3, v4 = WorldConfig.mini("v3"), WorldConfig.mini("v4")
    assert prompts(v3) == prompts(WorldConfig.mini("v2")) and len(prompts(v4)) == 2 * len(prompts(v3))
    plain = [Scene("red", b) for b in BODIES]
    scenes = plain + [Scene("red", b, smiling=True) for b in BODIES]
    cams = cameras_with_view(v3, "front", len(scenes), gen(5))
    for w, sc, want in ((v3, plain, [b in FACED_BODIES for b in BODIES]), (v4, scenes, [False] * len(BODIES) + [True] * len(BODIES))):
        r = render_scenes(sc, cams[:len(sc)], cfg=w)
        assert r["front_visible"].tolist() == want == [has_face(s, w.version) for s in sc]
        assert front_feature_visible(r["rgb"], min_fraction=2 / 1024)[0].tolist() == want  # the detector agrees, from images
    with pytest.raises(ValueError, match="a word of world v4 only: world v3"):  # a smiling scene exists in world v4 only
        render_scenes(scenes, cams, cfg=v3)
    assert all(("smiling" in s.caption()) == s.smiling for s in split_scenes(v4, "test")[:50])
