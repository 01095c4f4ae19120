"The front-feature detector of both world versions: front rate, Janus rate, synthetic Janus objects, confusion table."
import json, math
import pytest, torch
from instant3d.cameras import orbit_cameras
from instant3d.mini.world import PART_NAMES, WorldConfig, prompts, sample_dataset
from instant3d.mini.render import render_scenes
from instant3d.mini.janus import (cameras_with_view, detector_confusion, detector_settings, front_feature_visible,
                                  front_rate, janus_object_views, janus_rate, view_rates)

V2 = WorldConfig.mini("v2")

def gen(seed): return torch.Generator().manual_seed(seed)

def test_detector_settings_per_version():
    assert detector_settings()["min_fraction"] == detector_settings("v1")["min_fraction"] == 1 / 1024
    assert detector_settings("v2")["min_fraction"] == 2 / 1024
    with pytest.raises(ValueError, match="version='v7'"): detector_settings("v7")

def test_v2_ground_truth_rates_on_test_prompts():
    "On ground truth of world v2: the front is seen in front views and never in back views."
    ps = prompts(V2, "test")[::20]
    g = gen(3)
    f, b = cameras_with_view(V2, "front", len(ps), g), cameras_with_view(V2, "back", len(ps), g)
    imgs = torch.cat([render_scenes(ps, f, cfg=V2)["rgb"], render_scenes(ps, b, cfg=V2)["rgb"]])
    az, el = torch.cat([f.azimuth_deg, b.azimuth_deg]), torch.cat([f.elevation_deg, b.elevation_deg])
    r = view_rates(imgs, az, el, "v2")
    assert r["front_rate"] >= 0.95 and r["janus_rate"] <= 0.02, r

def test_synthetic_janus_objects_are_detected_and_match_direct_renders():
    ps = prompts(V2, "test")[::40]
    back = cameras_with_view(V2, "back", len(ps), gen(4))
    j = janus_object_views(ps, back, V2)
    assert janus_rate(j["rgb"], back.azimuth_deg, **detector_settings("v2")) >= 0.95
    assert j["front_visible"].float().mean() >= 0.95  # the synthetic object's own ground truth
    d = render_scenes(ps, back, cfg=V2)
    near = lambda o: torch.nn.functional.max_pool2d((o["part"] == PART_NAMES.index("front")).float(), 3, 1, 1) > 0
    same = ~near(j) & ~near(d)  # pixels away from the front feature in both images
    assert ((j["rgb"] - d["rgb"]).abs().amax(1, keepdim=True)[same] < 0.02).float().mean() > 0.99  # the reflection is exact
    with pytest.raises(ValueError, match="azimuth"): janus_object_views(ps[:1], orbit_cameras(0.0, 0.0, 3.3, 45.0), V2)

def test_front_rate_uses_front_labelled_views():
    cams = orbit_cameras(torch.tensor([0.0, 40.0, 0.0, 90.0]), torch.tensor([0.0, 10.0, 70.0, 0.0]), 3.3, 45.0)
    imgs = torch.ones(4, 3, 32, 32)
    imgs[0, :, 10:12, 10:12] = torch.tensor([0.05, 0.8, 0.8])[:, None, None]  # only view 0 shows the feature
    assert front_rate(imgs, cams.azimuth_deg, cams.elevation_deg) == 0.5  # views 0 and 1; 70 deg is overhead
    assert front_rate(imgs, cams.azimuth_deg, cams.elevation_deg, min_fraction=8 / 1024) == 0.0
    r = view_rates(imgs, cams.azimuth_deg, cams.elevation_deg)
    assert r["front_rate"] == 0.5 and math.isnan(r["janus_rate"])
    with pytest.raises(ValueError, match="no front views"): front_rate(imgs[3:], cams.azimuth_deg[3:])

def test_confusion_rows_are_consistent():
    rows = detector_confusion(V2, prompts(V2, "test")[:6], sizes=(16,), shadings=("albedo", "textureless"), seed=1)
    assert [(r["views"], r["shading"]) for r in rows] == [(v, s) for s in ("albedo", "textureless")
                                                          for v in ("front", "back", "janus")]
    for r in rows: assert r["tp"] + r["fp"] + r["fn"] + r["tn"] == r["n"] == 6
    tl = [r for r in rows if r["shading"] == "textureless"]
    assert all(r["detected"] == 0 for r in tl)  # no colour, no detection: the table says so rather than hiding it
    with pytest.raises(ValueError, match="shading"): detector_confusion(V2, prompts(V2)[:1], sizes=(16,), shadings=("phong",))

# the command line

def _run(*args, cwd=None):
    import subprocess
    from conftest import EXE, ENV
    return subprocess.run([EXE, *args], capture_output=True, text=True, cwd=cwd, env=ENV, timeout=600)

def test_ground_truth_rates_per_version():
    from instant3d.mini.janus import ground_truth_rates
    for w in (WorldConfig.mini(), V2):
        assert ground_truth_rates(w, n_prompts=16, seed=2) == dict(gt_front_rate=1.0, gt_janus_rate=0.0, gt_rate_prompts=16)

def test_world_eval_reports_ground_truth_rates(tmp_path):
    from instant3d.commands import world_eval
    from instant3d.text import mini_text_encoder
    from instant3d.mini.world import WORLD_WORDS
    from instant3d.mini.teacher import TeacherConfig, build_scheduler, build_unet, save_teacher
    from instant3d.mini.clip import MiniClipConfig, build_mini_clip, save_mini_clip
    tiny = TeacherConfig.tiny()
    mini_text_encoder(max_length=24, words=WORLD_WORDS).save_pretrained(tmp_path / "enc")
    torch.manual_seed(0)
    save_teacher(tmp_path / "teacher", build_unet(tiny), build_scheduler(tiny), tmp_path / "enc", cfg=tiny)
    ccfg = MiniClipConfig.tiny()
    save_mini_clip(*build_mini_clip(ccfg), ccfg, tmp_path / "clip")
    m = world_eval(tmp_path / "clip", tmp_path / "teacher", seed=5, max_prompts=4, steps=2)
    assert m["gt_janus_rate"] == 0.0 and 0.5 <= m["gt_front_rate"] <= 1.0 and m["gt_rate_prompts"] == 4
    assert m["world"] == "world v1" and {"gt_clip_rp", "teacher_view_accuracy"} <= set(m)

def test_cli_eval_reports_rates_and_diversity(tmp_path):
    r = _run("eval", "--max-prompts", "2", "--views", "1", "--open-prompts", "1", "--json", "--csv", str(tmp_path / "e.csv"))
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert 0 <= m["front_rate"] <= 1 and 0 <= m["janus_rate"] <= 1 and m["rate_prompts"] == 2 and m["world"] == "world v1"
    assert 0 < m["diversity"] <= 1 and 0 < m["gt_diversity"] <= 1 and m["open_seeds"] == 8 and len(m["open_prompts"]) == 1
    assert "something" not in m["open_prompts"][0]["prompt"]  # a world-v1 model does not know the word
    import csv  # the per-prompt CSV carries each rated prompt's front and Janus rates, whose means are the JSON's
    rows = list(csv.DictReader(open(tmp_path / "e.csv")))
    assert len(rows) == 2 and all(r["front"] != "" and r["janus"] != "" for r in rows)
    assert abs(sum(float(r["front"]) for r in rows) / 2 - m["front_rate"]) < 1e-6
    assert abs(sum(float(r["janus"]) for r in rows) / 2 - m["janus_rate"]) < 1e-6
    r = _run("eval", "--max-prompts", "2", "--open-prompts", "-1")
    assert r.returncode == 2 and "--open-prompts -1" in r.stderr

def test_cli_generate_names_unknown_words(tmp_path):
    r = _run("generate", "a red cube sitting on something", "--size", "32", "--formats", "png", "--out", str(tmp_path / "g"))
    assert r.returncode == 0, r.stderr
    notes = [l for l in r.stderr.splitlines() if "something" in l]
    assert len(notes) == 1 and "vocabulary" in notes[0]  # one line naming the word
    meta = json.loads((tmp_path / "g" / "metadata.json").read_text())
    assert meta["unknown_words"] == ["something"]
    r = _run("generate", "a red cube wearing a blue party hat", "--size", "32", "--formats", "png", "--out", str(tmp_path / "k"))
    assert r.returncode == 0 and json.loads((tmp_path / "k" / "metadata.json").read_text())["unknown_words"] == []
