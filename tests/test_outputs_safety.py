"Reliability of `generate` outputs and checkpoints: all-or-nothing output sets, non-finite weights and renders, `--checkpoint` hints, prompt reports, seed ranges."
import json, os, subprocess, sys, warnings
from dataclasses import replace
from pathlib import Path
import pytest, torch
from instant3d.generator import (CONFIG_NAME, WEIGHTS_NAME, CheckpointError, Instant3D, Instant3DConfig,
                                 Instant3DPipeline, check_finite, load_config, load_pipeline)
from instant3d.text import PromptTruncatedWarning, TextEncoder, mini_text_encoder, prompt_report
import instant3d.export as E

EXE = str(Path(sys.executable).parent / "instant3d")
FAST = dict(size=16, frames=2, mesh_res=16, threshold=5.0)

def cli(*args):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([EXE, *args], capture_output=True, text=True, env=env, timeout=600)

@pytest.fixture(scope="module")
def cfg():
    c = Instant3DConfig.mini()
    return replace(c, render=replace(c.render, n_samples=8, n_importance=8, test_height=16, test_width=16))

@pytest.fixture(scope="module")
def pipe(cfg):
    torch.manual_seed(0)
    return Instant3DPipeline(TextEncoder.from_config(cfg.text), Instant3D(cfg), checkpoint="ck/test")

def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

def leftovers(parent: Path, name: str) -> list:
    return [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.")]

def boom(*a, **k): raise KeyboardInterrupt  # as Ctrl-C in the middle of the mesh export

# --- all-or-nothing output sets

def test_interrupt_into_existing_folder_keeps_old_set(tmp_path, pipe, monkeypatch):
    out = tmp_path / "out"
    E.generate_outputs(pipe, "a red cube", out, formats=["png", "glb", "html"], metadata={"run": 1}, **FAST)
    (out / "mine.txt").write_text("user file")
    before = snapshot(out)
    assert {"views.png", "mesh.glb", "mesh.html", "metadata.json", "mine.txt"} <= set(before)
    monkeypatch.setattr(E, "save_mesh", boom)
    with pytest.raises(KeyboardInterrupt):
        E.generate_outputs(pipe, "a blue sphere", out, formats=["png", "glb"], metadata={"run": 2}, **FAST)
    assert snapshot(out) == before  # the old set, byte for byte: no new views.png beside the old metadata
    assert leftovers(tmp_path, "out") == []

def test_interrupt_into_new_folder_leaves_nothing(tmp_path, pipe, monkeypatch):
    monkeypatch.setattr(E, "save_mesh", boom)
    with pytest.raises(KeyboardInterrupt):
        E.generate_outputs(pipe, "a red cube", tmp_path / "new", formats=["png", "glb"], **FAST)
    assert list(tmp_path.iterdir()) == []  # no empty folder, no partial set, no temporary folder

def test_rerun_replaces_the_whole_set_and_keeps_other_files(tmp_path, pipe):
    out = tmp_path / "out"
    E.generate_outputs(pipe, "a red cube", out, formats=["png", "glb"], metadata={"run": 1}, **FAST)
    (out / "0001-a-red-cube").mkdir(); (out / "0001-a-red-cube" / "views.png").write_bytes(b"other prompt")
    (out / "index.json").write_text("{}"); os.chmod(out / "index.json", 0o600)
    r = E.generate_outputs(pipe, "a blue sphere", out, formats=["png"], metadata=lambda r: {"prompt": r["prompt"]},
                           **FAST)
    assert sorted(p.name for p in out.iterdir()) == ["0001-a-red-cube", "index.json", "metadata.json", "views.png"]
    assert (out / "0001-a-red-cube" / "views.png").read_bytes() == b"other prompt"
    assert (out / "index.json").stat().st_mode & 0o777 == 0o600  # the user's files keep their modes
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["prompt"] == "a blue sphere" and meta["prompt_report"] == r["prompt_report"]
    assert leftovers(tmp_path, "out") == []

def test_prompt_folders_are_swapped_whole(tmp_path, pipe, monkeypatch):
    "--prompts FILE writes one folder per prompt through generate_outputs: a failure in one leaves the others alone."
    done = tmp_path / "0001-a-red-cube"
    E.generate_outputs(pipe, "a red cube", done, formats=["png"], metadata={}, **FAST)
    before = snapshot(done)
    monkeypatch.setattr(E, "save_png", boom)
    with pytest.raises(KeyboardInterrupt):
        E.generate_outputs(pipe, "a blue sphere", tmp_path / "0002-a-blue-sphere", formats=["png"], **FAST)
    assert [p.name for p in tmp_path.iterdir()] == ["0001-a-red-cube"] and snapshot(done) == before

# --- non-finite weights and renders

@pytest.fixture(scope="module")
def nan_checkpoint(tmp_path_factory, cfg):
    m = Instant3D(Instant3DConfig.mini())
    name, p = list(m.named_parameters())[3]
    with torch.no_grad(): p.view(-1)[0] = float("nan")
    ck = tmp_path_factory.mktemp("nan") / "ck"
    m.save_pretrained(ck)
    first = next(k for k, v in m.state_dict().items() if not torch.isfinite(v).all())  # state dicts are name-ordered
    return ck, first

def test_nan_weights_are_a_checkpoint_error(nan_checkpoint):
    ck, first = nan_checkpoint
    for load in (lambda: Instant3D.from_pretrained(ck), lambda: load_pipeline(None, ck)):
        with pytest.raises(CheckpointError, match="non-finite weights") as e: load()
        assert str(ck / WEIGHTS_NAME) in str(e.value) and repr(first) in str(e.value) and "1 NaN" in str(e.value)

def test_generate_with_nan_checkpoint_fails_in_one_line(nan_checkpoint, tmp_path):
    r = cli("generate", "a red cube", "--checkpoint", str(nan_checkpoint[0]), "--out", str(tmp_path / "o"))
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode != 0 and len(lines) == 1 and lines[0].startswith("instant3d: error:"), r.stderr
    assert "non-finite weights" in lines[0] and not (tmp_path / "o").exists()

def test_non_finite_triplane_is_an_error_and_writes_nothing(tmp_path, pipe, monkeypatch):
    monkeypatch.setattr(pipe.model, "triplane", lambda tokens, noise=None, generator=None:
                        torch.full((len(tokens), 3, pipe.config.decoder.triplane_channels, 4, 4), float("nan")))
    with pytest.raises(ValueError, match=r"non-finite triplane of 'a red cube' \(seed 0\) \(checkpoint ck/test\)"):
        E.generate_outputs(pipe, "a red cube", tmp_path / "o", formats=["png"], **FAST)
    assert list(tmp_path.iterdir()) == []

def test_non_finite_renders_are_an_error(tmp_path, pipe, monkeypatch):
    real = E.render_views
    def nan_views(*a, **k):
        o = real(*a, **k); o["rgb"][0, 0, 0, 0] = float("inf"); return o
    monkeypatch.setattr(E, "render_views", nan_views)
    with pytest.raises(ValueError, match="non-finite rgb of the renders of 'a red cube'.*0 NaN and 1 inf"):
        E.generate_outputs(pipe, "a red cube", tmp_path / "o", formats=["png"], **FAST)
    assert list(tmp_path.iterdir()) == []

def test_check_finite():
    x = torch.ones(3)
    assert check_finite(x, "x") is x
    with pytest.raises(ValueError, match=r"non-finite scores \(checkpoint c\): 1 NaN and 0 inf of 2 values"):
        check_finite(torch.tensor([0.0, float("nan")]), "scores", "c")

def test_evaluate_clip_rp_names_the_checkpoint(cfg):
    from instant3d.clip_loss import Clip, ClipLossConfig
    from instant3d.evaluate import evaluate_clip_rp
    bad = Instant3D(cfg)
    with torch.no_grad(): next(bad.field.parameters()).fill_(float("nan"))
    p = Instant3DPipeline(TextEncoder.from_config(cfg.text), bad, checkpoint="runs/x/model")
    clip = Clip.from_pretrained(ClipLossConfig.mini().model)
    with pytest.raises(ValueError, match=r"non-finite .* \(checkpoint runs/x/model\)"):
        evaluate_clip_rp(p, clip, ["a red cube"], ["a red cube", "a blue sphere"], views=1)

# --- --checkpoint hints

@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    Instant3D(Instant3DConfig.mini()).save_pretrained(run / "checkpoint" / "model")
    (run / CONFIG_NAME).write_text(json.dumps({"steps": 10, "lr": 1e-3}))  # the training config at the run's root
    return run

def test_run_folder_points_to_checkpoint_model(run_folder):
    with pytest.raises(CheckpointError, match=r"training run folder.*; its model is in \S*/checkpoint/model$"):
        load_config(run_folder)

def test_run_folder_points_to_model(tmp_path):
    run = tmp_path / "run"
    Instant3D(Instant3DConfig.mini()).save_pretrained(run / "model")
    (run / CONFIG_NAME).write_text("{}")
    with pytest.raises(CheckpointError, match=f"its model is in {run / 'model'}$"): load_config(run)
    assert load_config(run / "model") == Instant3DConfig.mini()

def test_file_instead_of_folder(run_folder):
    f = run_folder / "checkpoint" / "model" / WEIGHTS_NAME
    with pytest.raises(CheckpointError, match=r"is a file; a checkpoint is a folder holding config.json \+ model"):
        load_config(f)
    r = cli("generate", "a red cube", "--checkpoint", str(run_folder), "--out", str(run_folder.parent / "o"))
    assert r.returncode != 0 and "training run folder" in r.stderr and "Traceback" not in r.stderr, r.stderr

# --- prompt reports

def test_prompt_report_and_short_truncation_warning():
    enc = mini_text_encoder(max_length=16)
    long = "a red cube wearing a blue hat " * 700  # about 20 KB
    with pytest.warns(PromptTruncatedWarning) as w: enc.encode(long)
    msg = str(w[0].message)
    assert len(w) == 1 and len(msg) < 200 and "\n" not in msg and "kept 16 of 4902 tokens" in msg, msg
    r = enc.prompt_report(long)
    assert r["truncated"] and r["tokens"] == 4902 and r["max_tokens"] == 16 and r["unknown_words"] == []
    assert prompt_report("a dragon on a cube", enc.tokenizer, 16)["unknown_words"] == ["dragon"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not enc.prompt_report("a red cube wearing a blue hat")["truncated"]

def test_metadata_records_prompt_report(tmp_path, pipe):
    r = E.generate_outputs(pipe, "a dragon wearing a blue hat", tmp_path / "o", formats=["png"], metadata={}, **FAST)
    meta = json.loads((tmp_path / "o" / "metadata.json").read_text())
    assert meta["prompt_report"] == {"truncated": False, "tokens": r["prompt_report"]["tokens"],
                                     "max_tokens": pipe.text_encoder.max_length, "unknown_words": ["dragon"]}
    assert any("dragon" in n for n in r["notes"])
    long = " ".join(["a red cube"] * 20)
    with pytest.warns(PromptTruncatedWarning):
        E.generate_outputs(pipe, long, tmp_path / "t", formats=["png"], metadata={}, **FAST)
    assert json.loads((tmp_path / "t" / "metadata.json").read_text())["prompt_report"]["truncated"] is True

# --- seeds

@pytest.mark.parametrize("text, msg", [("0-99999999999999999999", "seed 99999999999999999999 is out of range"),
                                       (str(2**63), "accepted 0 <= seed < 2\\*\\*63"),
                                       ("0-9223372036854775807", "more than 64 seeds")])
def test_parse_seeds_range(text, msg):
    with pytest.raises(ValueError, match=msg): E.parse_seeds(text)

def test_parse_seeds_limits():
    assert E.parse_seeds(f"{2**63 - 2}-{2**63 - 1}") == [2**63 - 2, 2**63 - 1]

def test_current_folder_is_refused(tmp_path, pipe, monkeypatch):
    (tmp_path / "project.txt").write_text("x")
    monkeypatch.chdir(tmp_path)
    for out in (".", tmp_path.parent):
        with pytest.raises(ValueError, match="holds the current folder"):
            E.generate_outputs(pipe, "a red cube", out, formats=["png"], **FAST)
    assert [p.name for p in tmp_path.iterdir()] == ["project.txt"]
