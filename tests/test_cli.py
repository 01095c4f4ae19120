"CLI contract: `instant3d info` / `instant3d generate`, run as a user would (the installed console script)."
import json, os, subprocess, sys
from pathlib import Path
import pytest

EXE = str(Path(sys.executable).parent / "instant3d")

def run(*args, cwd=None):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([EXE, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)

def one_line_error(r, status=None):
    assert r.returncode != 0, r.stdout
    if status is not None: assert r.returncode == status, (r.returncode, r.stderr)
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("instant3d: error:"), r.stderr
    return lines[0]

def test_console_script_installed():
    assert Path(EXE).is_file(), "pip install -e . should have created the `instant3d` console script"

@pytest.mark.parametrize("preset", ["paper", "official", "mini"])
def test_info_json(preset):
    r = run("info", "--preset", preset, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    parts = info["parameters_by_part"]
    assert set(parts) == {"token_to_plane", "style", "decoder", "field"}
    assert sum(parts.values()) == info["parameters"]
    assert len(info["triplane_shape"]) == 4 and info["triplane_shape"][0] == 3
    assert len(info["render_size"]) == 2
    if preset == "official":
        assert info["parameters"] == 269_769_476
        assert parts == {"token_to_plane": 121_722_944, "style": 11_959_104, "decoder": 136_085_056, "field": 2_372}
        assert info["triplane_shape"] == [3, 32, 256, 256]

def test_generate_writes_grid_and_metadata(tmp_path):
    out = tmp_path / "out"
    r = run("generate", "a red cube wearing a blue hat", "--seed", "3", "--size", "32", "--formats", "png", "--out", str(out))
    assert r.returncode == 0, r.stderr
    meta = json.loads((out / "metadata.json").read_text())
    for k in ("prompt", "seed", "preset", "checkpoint", "seconds"): assert k in meta
    assert meta["prompt"] == "a red cube wearing a blue hat" and meta["seed"] == 3 and meta["preset"] == "mini"
    from PIL import Image
    im = Image.open(out / "views.png")
    assert im.size == (4 * 34 + 2, 3 * 34 + 2)  # 4 views in a row; rows RGB, normals, depth
    if meta["checkpoint"] == "random": assert "RANDOM" in r.stderr  # says plainly that the weights are untrained
    assert sorted(p.name for p in out.iterdir()) == ["metadata.json", "views.png"]  # no temp files left

def test_generate_same_seed_same_image(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for o in (a, b): assert run("generate", "a green sphere", "--size", "16", "--formats", "png", "--out", str(o)).returncode == 0
    assert (a / "views.png").read_bytes() == (b / "views.png").read_bytes()

def test_error_empty_prompt(tmp_path):
    assert "empty prompt" in one_line_error(run("generate", "   ", "--out", str(tmp_path / "o")), 2)
    assert not (tmp_path / "o").exists()

def test_error_unknown_preset(tmp_path):
    line = one_line_error(run("generate", "a cube", "--preset", "huge", "--out", str(tmp_path)), 2)
    assert "huge" in line and "mini" in line
    assert "huge" in one_line_error(run("info", "--preset", "huge"), 2)

def test_error_missing_checkpoint(tmp_path):
    line = one_line_error(run("generate", "a cube", "--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "o")))
    assert "not found" in line and "nope" in line
    assert not (tmp_path / "o").exists()  # a failed run creates nothing

def test_error_corrupt_checkpoint(tmp_path):
    ck = tmp_path / "ck"; ck.mkdir()
    (ck / "config.json").write_text("{ not json")
    assert "corrupt" in one_line_error(run("generate", "a cube", "--checkpoint", str(ck), "--out", str(tmp_path / "o")))
    from instant3d.generator import Instant3D, Instant3DConfig
    Instant3D(Instant3DConfig.mini()).save_pretrained(ck)
    (ck / "model.safetensors").write_bytes(b"\x00" * 100)
    assert "corrupt" in one_line_error(run("generate", "a cube", "--checkpoint", str(ck), "--out", str(tmp_path / "o")))

def test_error_unwritable_output(tmp_path):
    blocker = tmp_path / "a_file"; blocker.write_text("x")
    line = one_line_error(run("generate", "a cube", "--out", str(blocker / "sub")))
    assert "not writable" in line


def test_closed_pipe_is_quiet():
    "`instant3d prompts mini | head -1`: the reader has gone; no traceback, exit status 141 as from SIGPIPE."
    p = subprocess.Popen([EXE, "prompts", "mini"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    p.stdout.close()  # before it writes: its first full buffer meets a closed pipe
    err = p.stderr.read().decode(); p.wait(timeout=120)
    assert "Traceback" not in err and p.returncode == 141, err
