"Trainer contracts: presets and overrides, exact resume, non-finite steps, DDP on 2 CPU processes, the train/eval CLI, a CUDA smoke run."
import csv, json, math, os, subprocess, sys
from dataclasses import replace
from pathlib import Path
import pytest, torch
from instant3d.conventions import config_to_dict, config_from_dict
from instant3d.train_config import TrainConfig, TRAIN_PRESETS, train_preset, apply_overrides, tiny_train_config
from instant3d.train import run_training, Trainer, TrainingDiverged, fingerprint, init_distributed

from conftest import EXE, ENV  # and the `teacher_dir` fixture


# names other modules, benchmarks and notebooks import from instant3d.train since it was split in three
OLD_NAMES = ("TrainConfig", "Trainer", "DistInfo", "PromptBank", "train_preset", "apply_overrides", "evaluate_clip_rp",
             "prompt_split", "world_ground_truth", "load_train_config", "TRAIN_PRESETS", "run_training", "TrainingDiverged",
             "tiny_train_config", "_load_guidance", "_load_clip", "fingerprint", "init_distributed")


def test_split_modules_keep_the_old_names():
    "instant3d.train re-exports what moved to train_config and evaluate; none of the three imports the mini world."
    code = ("import sys, instant3d.train as t, instant3d.train_config as c, instant3d.evaluate as e\n"
            f"missing = [n for n in {OLD_NAMES!r} if not hasattr(t, n)]\n"
            "assert not missing, missing\n"
            "assert t.TrainConfig is c.TrainConfig and t.evaluate_clip_rp is e.evaluate_clip_rp\n"
            "apps = ('instant3d.mini', 'instant3d.cli', 'instant3d.baseline', 'instant3d.reproduce', 'instant3d.explorer',\n"
            "        'instant3d.export')\n"
            "bad = [m for m in sys.modules if any(m == a or m.startswith(a + '.') for a in apps)]\n"
            "assert not bad, bad\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


def test_presets_round_trip():
    for n in TRAIN_PRESETS:
        c = train_preset(n)
        assert config_from_dict(TrainConfig, json.loads(json.dumps(config_to_dict(c)))) == c
    assert train_preset("mini").sds.teacher == "mini" and train_preset("animals").generator.preset == "paper"
    with pytest.raises(ValueError, match="zoo"): train_preset("zoo")


@pytest.mark.parametrize("bad,match", [(["nope=1"], "nope"), (["sds.nope=2"], "nope"), (["batch_size=0"], "batch_size"),
                                       (["lr"], "key=value"), (["perp_neg.mode=sometimes"], "sometimes")])
def test_override_errors(bad, match):
    with pytest.raises(ValueError, match=match): apply_overrides(train_preset("mini"), bad)


def test_resume_is_exact(tmp_path, teacher_dir):
    cfg = tiny_train_config(teacher_dir, steps=4, checkpoint_every=2)
    a = run_training(cfg, tmp_path / "a", progress=False)
    run_training(cfg, tmp_path / "b", progress=False, max_steps=2)
    b = run_training(cfg, tmp_path / "b", progress=False, resume=True)
    assert a["step"] == b["step"] == 4
    sa, sb = (torch.load(tmp_path / x / "checkpoint" / "train_state.pt", weights_only=True) for x in "ab")
    for part in ("model", "ema"):
        for k in sa[part]: torch.testing.assert_close(sa[part][k], sb[part][k], rtol=1e-5, atol=1e-6)
    if sa["cache"] is not None:
        for k, v in sa["cache"].items():
            if torch.is_tensor(v): torch.testing.assert_close(v, sb["cache"][k])
    rows = list(csv.DictReader(open(tmp_path / "b" / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]  # no duplicated rows after the resume


def test_resume_after_a_kill_during_the_checkpoint_swap(tmp_path, teacher_dir):
    "A kill between the two renames of a checkpoint swap leaves only .checkpoint.old: --resume finishes the swap."
    cfg = tiny_train_config(teacher_dir, steps=4, checkpoint_every=2)
    run_training(cfg, tmp_path / "r", progress=False, max_steps=2)
    (tmp_path / "r" / "checkpoint").rename(tmp_path / "r" / ".checkpoint.old")
    s = run_training(cfg, tmp_path / "r", progress=False, resume=True)
    assert s["step"] == 4 and not (tmp_path / "r" / ".checkpoint.old").exists()
    assert not [p.name for p in (tmp_path / "r").iterdir() if p.name.startswith(".") and p.name != ".lock"]  # no temporary left


def test_warm_start_from_a_model_folder(tmp_path, teacher_dir):
    cfg = tiny_train_config(teacher_dir, steps=2)
    run_training(cfg, tmp_path / "a", progress=False)
    src = tmp_path / "a" / "model"
    warm = Trainer(replace(cfg, init_from=str(src), seed=5), tmp_path / "b")  # another seed: the weights must still come from src
    from instant3d.generator import Instant3D
    assert fingerprint(warm.model) == fingerprint(warm.ema) == fingerprint(Instant3D.from_pretrained(src))
    assert fingerprint(Trainer(replace(cfg, seed=5), tmp_path / "c").model) != fingerprint(warm.model)
    with pytest.raises(ValueError, match="does not fit"):
        Trainer(replace(cfg, init_from=str(src), generator=apply_overrides(cfg.generator, ["field.hidden=8"])), tmp_path / "d")
    with pytest.raises(Exception, match="not found"): Trainer(replace(cfg, init_from=str(tmp_path / "nope")), tmp_path / "e")


def test_resume_refuses_a_different_config(tmp_path, teacher_dir):
    cfg = tiny_train_config(teacher_dir, steps=2)
    run_training(cfg, tmp_path / "r", progress=False)
    with pytest.raises(ValueError, match="differs"): run_training(replace(cfg, lr=0.5), tmp_path / "r", resume=True, progress=False)


def test_nonfinite_steps_stop_with_checkpoint_intact(tmp_path, teacher_dir):
    cfg = tiny_train_config(teacher_dir, steps=10, checkpoint_every=2, max_nonfinite=3)
    t = Trainer(cfg, tmp_path / "run")
    t.fit(max_steps=2, progress=False)
    good = fingerprint(t.ema)
    sds = t.guidance.sds
    t.guidance.sds = lambda *a, **k: dict(sds(*a, **k), loss=torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(TrainingDiverged, match="intact"): t.fit(progress=False)
    assert t.nonfinite == 3
    state = torch.load(tmp_path / "run" / "checkpoint" / "train_state.pt", weights_only=True)
    assert state["step"] == 2
    t2 = Trainer(cfg, tmp_path / "run"); t2.resume()
    assert fingerprint(t2.ema) == good


def _write_config(path, cfg):
    path.write_text(json.dumps(config_to_dict(cfg)))
    return str(path)


def test_ddp_two_cpu_processes(tmp_path, teacher_dir):
    "torchrun, 2 processes, gloo: both ranks end with bitwise-identical weights and a finite loss."
    cfg = _write_config(tmp_path / "cfg.json", tiny_train_config(teacher_dir, steps=3, checkpoint_every=0))
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", EXE, "train",
                        "--config", cfg, "--out", str(tmp_path / "ddp"), "--no-progress", "--device", "cpu"],
                       capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = json.loads((tmp_path / "ddp" / "ranks.json").read_text())
    assert [x["rank"] for x in ranks] == [0, 1]
    assert ranks[0]["fingerprint"] == ranks[1]["fingerprint"]
    assert all(math.isfinite(x["loss"]) for x in ranks)
    info = json.loads((tmp_path / "ddp" / "model" / "training.json").read_text())
    assert info["world_size"] == 2 and info["steps"] == 3


def test_cli_train_then_eval(tmp_path, teacher_dir):
    cfg = _write_config(tmp_path / "cfg.json", tiny_train_config(teacher_dir, steps=2))
    run = lambda *a: subprocess.run([EXE, *a], capture_output=True, text=True, env=ENV, timeout=600)
    r = run("train", "--config", cfg, "--out", str(tmp_path / "run"), "--set", "lr=0.002", "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["lr"] == 0.002
    r = run("train", "--config", cfg, "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and "--resume" in r.stderr  # an existing run is never overwritten
    r = run("eval", "--checkpoint", str(tmp_path / "run" / "model"), "--split", "test", "--max-prompts", "3", "--views", "2",
            "--csv", str(tmp_path / "scores.csv"), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads(r.stdout)
    assert 0 <= m["clip_rp"] <= 1 and 0 <= m["top1"] <= 1 and m["n_prompts"] == 3 and 0 < m["gt_clip_rp"] <= 1
    assert 0 <= m["silhouette_iou"] <= 1
    assert len(list(csv.DictReader(open(tmp_path / "scores.csv")))) == 3


@pytest.mark.parametrize("args,match", [(["--preset", "zoo"], "zoo"), (["--preset", "dailylife"], "prompts"),
                                        (["--prompts", "/nonexistent/p.txt"], "no such file"), (["--set", "bogus=1"], "bogus"),
                                        (["--max-steps", "0"], "max-steps"), (["--set", "init_from=/nonexistent/model"], "init_from")])
def test_cli_train_errors(tmp_path, args, match):
    r = subprocess.run([EXE, "train", "--out", str(tmp_path / "o"), *args], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 2 and match in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.cuda
def test_two_steps_on_cuda(tmp_path, teacher_dir):
    cfg = tiny_train_config(teacher_dir, steps=2, bf16=True)
    s = run_training(cfg, tmp_path / "gpu", progress=False, device="cuda")
    assert s["step"] == 2 and math.isfinite(s["last"]["loss"])
