"Per-prompt baseline contracts: the trainer's step on free objects, CLI runs and errors, save/load round trip."
import csv, json, os, subprocess, sys
from dataclasses import replace
from pathlib import Path
import pytest, torch
from instant3d.baseline import BaselineConfig, baseline_preset, run_baseline, save_baseline, load_prompt_object
from instant3d.train_config import tiny_train_config, apply_overrides

from conftest import EXE, ENV  # and the `teacher_dir` fixture


def test_config_shares_the_training_preset():
    for name in ("mini", "animals", "portraits"):
        c = baseline_preset(name)
        assert c.train.preset == name and c.steps == -(-c.views_pp // c.views_per_step)
    assert apply_overrides(baseline_preset("mini"), ["train.perp_neg.mode=off"]).train.perp_neg.mode == "off"
    with pytest.raises(ValueError, match="views_pp"): BaselineConfig(views_pp=0)


def test_run_save_load(tmp_path, teacher_dir):
    cfg = BaselineConfig(train=tiny_train_config(teacher_dir), views_pp=4, views_per_step=2)
    prompts = ["a red cube", "a blue sphere wearing a red party hat"]
    res = run_baseline(cfg, prompts, eval_at=[2], eval_views=1)
    assert [r["views_pp"] for r in res["curve"]] == [2, 4]
    assert all(0 <= r["clip_rp"] <= 1 for r in res["curve"])
    d = save_baseline(res, cfg, prompts, tmp_path / "run", size=16)
    o = load_prompt_object(d / "objects" / "000.safetensors", cfg.train.generator)
    torch.testing.assert_close(o.planes, res["objects"][0].planes)
    assert json.loads((d / "prompts.json").read_text()) == prompts and (d / "views.png").is_file()
    with pytest.raises(ValueError, match="distinct"): run_baseline(cfg, ["a red cube", "a red cube"])
    with pytest.raises(ValueError, match="eval_at"): run_baseline(cfg, ["a red cube"], eval_at=[5])


def test_cli_baseline_tiny(tmp_path, teacher_dir):
    sets = [f"train.sds.teacher={teacher_dir}", "train.render_size=16", "train.generator.render.n_samples=8", "train.generator.render.n_importance=8",
            "train.generator.render.test_height=16", "train.generator.render.test_width=16"]
    r = subprocess.run([EXE, "baseline", "--prompts", "a red cube", "--views-pp", "2", "--views-per-step", "2", "--out", str(tmp_path / "b"),
                        "--json", "--no-progress", "--set", *sets], capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads(r.stdout)
    assert s["prompts"] == 1 and s["views_pp"] == 2 and s["softmax_set"] == 1620 and 0 < s["gt_clip_rp"] <= 1  # a mini-world caption: paper protocol
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [".lock", "config.json", "curve.json", "metrics.csv", "objects", "prompts.json", "views.png"]
    rows = list(csv.DictReader(open(tmp_path / "b" / "metrics.csv")))
    assert [(r["prompt"], r["step"], r["skipped"]) for r in rows] == [("0", "1", "0")]
    assert float(rows[0]["loss"]) == float(rows[0]["loss"])  # a number, not NaN or empty


@pytest.mark.parametrize("args,match", [([], "--prompts"), (["--prompts", "x", "--preset", "zoo"], "zoo"), (["--prompts", "x", "--set", "bogus=1"], "bogus"),
                                        (["--prompts", "x", "--views-pp", "0"], "views_pp"), (["--prompts", "x", "--views-pp", "4", "--eval-at", "8"], "eval_at")])
def test_cli_baseline_errors(tmp_path, args, match):
    r = subprocess.run([EXE, "baseline", "--out", str(tmp_path / "o"), *args], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 2 and match in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "o").exists()
