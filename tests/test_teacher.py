"Contracts of the mini teacher (mini.teacher, .teacher_train, .sampling, .analysis): config, toy training + resume + CLI, layout, sampling, oracle."
import argparse, dataclasses, json
from pathlib import Path
import pytest, torch
from instant3d.conventions import config_to_dict, config_from_dict
from instant3d.cli import add_train_teacher_args
from instant3d.sds import guide, to_unet
from instant3d.mini.teacher_train import train_teacher, run_train_teacher
from instant3d.mini.teacher import (TeacherConfig, load_teacher, build_scheduler, TEACHER_SUBFOLDERS,
                                    CaptionBank, bank_captions)
from instant3d.mini.sampling import sample
from instant3d.mini.analysis import closed_form_denoiser, empirical_set
from instant3d.text import mini_text_encoder
from instant3d.mini.world import WORLD_WORDS, prompts


@pytest.fixture(scope="module")
def enc_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("enc")
    mini_text_encoder(max_length=24, words=WORLD_WORDS).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, enc_dir):
    out = tmp_path_factory.mktemp("teacher") / "run"
    train_teacher(TeacherConfig.tiny(), enc_dir, out, progress=False)
    return out


def test_config_round_trip_and_presets():
    for c in (TeacherConfig.paper(), TeacherConfig.official(), TeacherConfig.mini(), TeacherConfig.tiny()):
        assert config_from_dict(TeacherConfig, json.loads(json.dumps(config_to_dict(c)))) == c


@pytest.mark.parametrize("bad", [dict(caption_dropout=-0.1), dict(lr=0.0), dict(batch_size=0), dict(prediction_type="v_prediction"),
                                 dict(fresh_per_batch=100), dict(down_block_types=("DownBlock2D",)), dict(background="pink")])
def test_config_errors(bad):
    with pytest.raises(ValueError, match=next(iter(bad))): TeacherConfig(**bad)


def test_run_layout_and_log(run_dir):
    t = run_dir / "teacher"
    assert all((t / s).is_dir() for s in TEACHER_SUBFOLDERS) and (t / "model_index.json").exists()
    assert (t / "unet" / "diffusion_pytorch_model.safetensors").exists()
    assert config_from_dict(TeacherConfig, json.loads((t / "teacher_config.json").read_text())) == TeacherConfig.tiny()
    rows = (run_dir / "loss_log.csv").read_text().splitlines()
    assert rows[0] == "step,loss,lr,seconds" and [int(r.split(",")[0]) for r in rows[1:]] == [5, 10, 15, 20]
    assert json.loads((run_dir / "config.json").read_text())["teacher"] == config_to_dict(TeacherConfig.tiny())


def test_same_stack_as_stable_diffusion(run_dir):
    "The guidance code loads it with the classes and calls it uses for SD."
    from diffusers import UNet2DConditionModel, DDPMScheduler, DDIMScheduler
    from transformers import CLIPTextModel, CLIPTokenizer
    t = run_dir / "teacher"
    unet = UNet2DConditionModel.from_pretrained(str(t), subfolder="unet", local_files_only=True)
    sch = DDPMScheduler.from_pretrained(str(t), subfolder="scheduler", local_files_only=True)
    CLIPTextModel.from_pretrained(str(t), subfolder="text_encoder", local_files_only=True)
    assert len(CLIPTokenizer.from_pretrained(str(t), subfolder="tokenizer", local_files_only=True)) > 3
    assert sch.config.prediction_type == "epsilon" and DDIMScheduler.from_config(sch.config).config.num_train_timesteps == 1000
    assert unet.config.sample_size == 16 and unet.config.cross_attention_dim == 64


def test_resume_matches_and_extends(run_dir, enc_dir, tmp_path):
    "Resume from step 10 reproduces the uninterrupted run's step-20 weights; a further resume extends steps."
    import shutil
    out = tmp_path / "run"
    train_teacher(dataclasses.replace(TeacherConfig.tiny(), steps=10), enc_dir, out, progress=False)
    (out / "checkpoint").rename(out / ".checkpoint.old")  # killed in the middle of a checkpoint swap: resume finishes it
    train_teacher(TeacherConfig.tiny(), enc_dir, out, resume=True, progress=False)
    a = torch.load(out / "checkpoint" / "train_state.pt", weights_only=True)
    b = torch.load(run_dir / "checkpoint" / "train_state.pt", weights_only=True)
    assert a["step"] == b["step"] == 20
    for k in a["ema"]: torch.testing.assert_close(a["ema"][k], b["ema"][k])
    train_teacher(dataclasses.replace(TeacherConfig.tiny(), steps=25), enc_dir, out, resume=True, progress=False)
    assert torch.load(out / "checkpoint" / "train_state.pt", weights_only=True)["step"] == 25


def test_run_folder_errors(run_dir, enc_dir, tmp_path):
    with pytest.raises(ValueError, match="resume"): train_teacher(TeacherConfig.tiny(), enc_dir, run_dir, progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint"): train_teacher(TeacherConfig.tiny(), enc_dir, tmp_path / "new", resume=True, progress=False)
    with pytest.raises(ValueError, match="lr"):
        train_teacher(dataclasses.replace(TeacherConfig.tiny(), lr=1e-4), enc_dir, run_dir, resume=True, progress=False)
    with pytest.raises(FileNotFoundError, match="unet"): load_teacher(tmp_path)


def test_cli(enc_dir, tmp_path):
    p = add_train_teacher_args(argparse.ArgumentParser())
    out = tmp_path / "cli"
    assert run_train_teacher(p.parse_args(["--out", str(out), "--text-encoder", str(enc_dir), "--preset", "tiny", "--steps", "4",
                                           "--seed", "3", "--no-progress"])) == out / "teacher"
    assert json.loads((out / "config.json").read_text())["teacher"]["seed"] == 3
    run_train_teacher(p.parse_args(["--out", str(out), "--text-encoder", str(enc_dir), "--steps", "6", "--resume", "--no-progress"]))
    assert torch.load(out / "checkpoint" / "train_state.pt", weights_only=True)["step"] == 6


def test_fp16_weights_load_as_fp32(run_dir, tmp_path):
    from instant3d.mini.teacher import save_teacher
    t = load_teacher(run_dir / "teacher")
    enc = json.loads((run_dir / "config.json").read_text())["text_encoder_dir"]
    save_teacher(tmp_path / "half", t.unet, t.scheduler, enc, dtype=torch.float16)
    h = load_teacher(tmp_path / "half")
    assert h.unet.dtype == torch.float32 and t.unet.dtype == torch.float32
    x, tt, c = torch.randn(2, 3, 16, 16), torch.tensor([10, 500]), torch.randn(2, 24, 64)
    with torch.no_grad(): torch.testing.assert_close(h.unet(x, tt, c).sample, t.unet(x, tt, c).sample, atol=2e-2, rtol=2e-2)


def test_sample_seeded_and_ranged(run_dir):
    t = load_teacher(run_dir / "teacher")
    ps = prompts(TeacherConfig.tiny().world)[:2]
    a = sample(t, ps, n=2, steps=2, seed=1)
    assert a.shape == (4, 3, 16, 16) and a.min() >= 0 and a.max() <= 1
    torch.testing.assert_close(a, sample(t, ps, n=2, steps=2, seed=1))
    with pytest.raises(ValueError, match="n="): sample(t, ps, n=0)


def test_caption_bank_layout():
    caps = bank_captions(["a", "b"])
    assert caps[0] == "" and caps[CaptionBank.index(1).item()] == "b" and caps[CaptionBank.index(0, 2).item()] == "a, back view"
    torch.testing.assert_close(guide(torch.ones(1), torch.full((1,), 3.0), 2.0), torch.full((1,), 5.0))


def test_closed_form_oracle_vs_loop():
    "Vectorised posterior mean equals a per-image loop over the stored renders."
    w = TeacherConfig.tiny().world
    ps = prompts(w)[:2]
    es = empirical_set(w, ps, per_prompt=6, seed=0)
    sch = build_scheduler(TeacherConfig.tiny())
    g = torch.Generator().manual_seed(0)
    x_t, t = torch.randn(3, 3, 16, 16, generator=g), torch.tensor([100, 600, 900])
    caps = [ps[0], ps[1], ps[0]]
    eps = closed_form_denoiser(x_t, t, caps, es, sch)
    for b in range(3):
        a = sch.alphas_cumprod[t[b]]
        xi = to_unet(es[caps[b]].float() / 255)
        logw = torch.stack([-(x_t[b] - a.sqrt() * x).square().sum() / (2 * (1 - a)) for x in xi])
        x0 = (logw.softmax(0)[:, None, None, None] * xi).sum(0)
        torch.testing.assert_close(eps[b], (x_t[b] - a.sqrt() * x0) / (1 - a).sqrt(), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="no renders"): closed_form_denoiser(x_t[:1], t[:1], ["a pink unicorn"], es, sch)


def test_evaluate_teacher_runs(run_dir, tmp_path):
    "The bar figures come out in range with an untrained tiny CLIP (the shipped numbers are in the model card)."
    from instant3d.mini.clip import MiniClipConfig, build_mini_clip, save_mini_clip
    from instant3d.mini.analysis import evaluate_teacher
    ccfg = MiniClipConfig.tiny()
    model, tok = build_mini_clip(ccfg)
    save_mini_clip(model, tok, ccfg, tmp_path / "clip")
    m = evaluate_teacher(run_dir / "teacher", tmp_path / "clip", seed=0, max_prompts=3, n_view_prompts=2, steps=2, progress=False)
    assert m["n_prompts"] == 3 and m["n_view_prompts"] == 2
    for k in ("teacher_clip_rp", "gt_clip_rp", "teacher_view_accuracy", "gt_view_accuracy"): assert 0 <= m[k] <= 1, k
    assert m["teacher_clip_rp_ratio"] == pytest.approx(m["teacher_clip_rp"] / m["gt_clip_rp"])


def test_interrupt_writes_resumable_checkpoint(enc_dir, tmp_path, monkeypatch):
    "Ctrl-C / SIGTERM (KeyboardInterrupt) mid-run leaves a checkpoint at the last finished step; --resume finishes the run."
    import instant3d.mini.teacher_train as T
    real, calls = T.diffusion_loss, []
    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 7: raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(T, "diffusion_loss", flaky)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt): train_teacher(TeacherConfig.tiny(), enc_dir, out, progress=False, checkpoint_min=None)
    assert torch.load(out / "checkpoint" / "train_state.pt", weights_only=True)["step"] == 6
    assert train_teacher(TeacherConfig.tiny(), enc_dir, out, resume=True, progress=False) == out / "teacher"


def test_init_from_starts_at_the_given_weights(run_dir, enc_dir, tmp_path):
    "A staged run starts (weights and EMA) from another teacher's UNet, not from a fresh init."
    from instant3d.mini.teacher_train import _Run
    src = load_teacher(run_dir / "teacher").unet.state_dict()
    r = _Run(dataclasses.replace(TeacherConfig.tiny(), init_from=str(run_dir / "teacher")))
    for k, v in r.unet.state_dict().items(): torch.testing.assert_close(v, src[k])
    for k, v in r.ema.state_dict().items(): torch.testing.assert_close(v, src[k])
    fresh = _Run(TeacherConfig.tiny()).unet.state_dict()
    assert any((fresh[k] - src[k]).abs().max() > 1e-3 for k in src)  # the check above is not trivially true


def test_init_from_errors(run_dir, tmp_path):
    from instant3d.mini.teacher_train import _Run
    with pytest.raises(FileNotFoundError, match="init_from"): _Run(dataclasses.replace(TeacherConfig.tiny(), init_from=str(tmp_path / "none")))
    other = dataclasses.replace(TeacherConfig.tiny(), block_out_channels=(16, 16))
    with pytest.raises(ValueError, match="does not match"): _Run(dataclasses.replace(other, init_from=str(run_dir / "teacher")))
    with pytest.raises(ValueError, match="front_weight"): TeacherConfig(front_weight=-1.0)
    with pytest.raises(ValueError, match="init_from"): TeacherConfig(init_from="")


def test_front_weight_map_marks_the_nose_and_its_rim():
    from instant3d.mini.teacher import front_weight_map
    from instant3d.mini.world import FRONT_RGB
    img = torch.ones(1, 3, 8, 8)
    img[0, :, 3, 4] = torch.tensor(FRONT_RGB)
    w = front_weight_map(img, 9.0)[0, 0]
    assert w.shape == (8, 8) and w[3, 4] == 10 and w[2:5, 3:6].eq(10).all() and w.sum() == 64 + 9 * 9
    assert front_weight_map(torch.ones(2, 3, 8, 8), 9.0).eq(1).all()  # no nose, plain weights


def test_weighted_loss_is_plain_loss_for_uniform_weights():
    from instant3d.mini.teacher import build_unet, diffusion_loss
    cfg = TeacherConfig.tiny()
    torch.manual_seed(0); u, s = build_unet(cfg), build_scheduler(cfg)
    x0, tok = torch.rand(2, 3, 16, 16) * 2 - 1, torch.randn(2, 24, 64)
    a = diffusion_loss(u, s, x0, tok, torch.Generator().manual_seed(1))
    b = diffusion_loss(u, s, x0, tok, torch.Generator().manual_seed(1), torch.full((2, 1, 16, 16), 3.0))
    torch.testing.assert_close(a, b)


def test_cli_staged_run_and_resume_flags(run_dir, enc_dir, tmp_path):
    import shutil
    p = add_train_teacher_args(argparse.ArgumentParser())
    out, init = tmp_path / "stage2", tmp_path / "init"
    shutil.copytree(run_dir / "teacher", init)
    base = ["--out", str(out), "--text-encoder", str(enc_dir), "--no-progress"]
    run_train_teacher(p.parse_args(base + ["--preset", "tiny", "--steps", "3", "--init-from", str(init), "--lr", "3e-4",
                                           "--front-weight", "4", "--threads", "1"]))
    stored = json.loads((out / "config.json").read_text())["teacher"]
    assert (stored["lr"], stored["front_weight"], stored["threads"], stored["init_from"]) == (3e-4, 4.0, 1, str(init))
    with pytest.raises(ValueError, match="only --steps"): run_train_teacher(p.parse_args(base + ["--resume", "--steps", "5", "--lr", "1e-3"]))
    shutil.rmtree(init)  # a resumed staged run takes its weights from the checkpoint, not from init_from
    run_train_teacher(p.parse_args(base + ["--resume", "--steps", "5", "--threads", "2"]))
    assert torch.load(out / "checkpoint" / "train_state.pt", weights_only=True)["step"] == 5


def test_loading_the_shipped_teacher_prints_no_accelerate_warning():
    "diffusers warns on every load when low_cpu_mem_usage is on and accelerate is absent: `low_mem_kwargs` asks for it only where accelerate is installed."
    import subprocess, sys
    code = "from instant3d.sds import SDSConfig, SDSGuidance; SDSGuidance.from_pretrained(SDSConfig(teacher='mini'))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "accelerate" not in r.stderr, r.stderr


def test_samplers_guide_through_sds(monkeypatch):
    "ddim_sample combines (uncond, cond) with instant3d.sds.guide, the project's one classifier-free guidance (paper Eq. 3)."
    import instant3d.sds, instant3d.mini.sampling as S
    assert S.guide is instant3d.sds.guide
    calls = []
    def spy(u, c, s):
        calls.append(s); return instant3d.sds.guide(u, c, s)
    monkeypatch.setattr(S, "guide", spy)
    sch = build_scheduler(TeacherConfig.tiny())
    for sampler in S.SAMPLERS:
        x = S.ddim_sample(lambda x, t, c: torch.zeros_like(x), None, sch.config, 1, 8, steps=3, guidance_scale=4.0, sampler=sampler)
        assert x.shape == (1, 3, 8, 8)
    assert calls == [4.0] * 6
