"`instant3d generate` outputs, run as a user would: every format written and reloadable, seeds side by side, prompt files, errors."
import json, os, subprocess, sys
from pathlib import Path
import numpy as np
import pytest

EXE = str(Path(sys.executable).parent / "instant3d")
SMALL = ("--size", "16", "--frames", "3", "--mesh-res", "32")

def run(*args):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([EXE, *args], capture_output=True, text=True, env=env, timeout=600)

def one_line_error(r, status):
    assert r.returncode == status, (r.returncode, r.stdout, r.stderr)
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("instant3d: error:"), r.stderr
    return lines[0]

@pytest.fixture(scope="module")
def default_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "cube"
    r = run("generate", "a red cube wearing a blue hat", "--seed", "1", *SMALL, "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out

def test_every_default_format_written(default_out):
    from instant3d.export import default_formats
    names = {p.name for p in default_out.iterdir()}
    want = {"views.png", "turntable.gif", "mesh.glb", "mesh.obj", "mesh.ply", "mesh.html", "metadata.json"}
    if "mp4" in default_formats(): want.add("turntable.mp4")
    assert names == want  # and no temporary files left
    meta = json.loads((default_out / "metadata.json").read_text())
    for k in ("prompt", "seed", "checkpoint", "config", "timings", "files", "mesh", "threshold"): assert k in meta, k
    assert meta["seed"] == 1 and meta["config"]["preset"] == "mini"
    assert set(meta["timings"]) >= {"load", "triplane", "views", "turntable", "mesh", "write"}

def test_glb_reloads_with_sane_mesh(default_out):
    import trimesh
    meta = json.loads((default_out / "metadata.json").read_text())
    m = trimesh.load(default_out / "mesh.glb", force="mesh")
    assert 200 <= len(m.faces) <= 100_000 and len(m.faces) == meta["mesh"][0]["faces"]
    lo, hi = m.bounds
    assert np.all(np.abs(m.bounds) <= 1.25 + 1e-3)  # inside the sphere the renderer sees (mini: radius 1.25)
    assert (hi - lo).min() > 0.2  # an object, not a sliver
    assert m.visual.vertex_colors.shape == (len(m.vertices), 4) and np.ptp(m.visual.vertex_colors[:, :3]) > 0  # albedo colours
    for fmt in ("obj", "ply"):
        other = trimesh.load(default_out / f"mesh.{fmt}", force="mesh", process=False)
        assert len(other.faces) == len(m.faces), fmt
        np.testing.assert_allclose(other.bounds, m.bounds, atol=1e-4)

def test_turntable_has_the_asked_frames(default_out):
    from PIL import Image
    from instant3d.export import have_mp4, mp4_frame_count
    g = Image.open(default_out / "turntable.gif")
    assert g.n_frames == 3 and g.size == (16, 16)
    if have_mp4(): assert mp4_frame_count(default_out / "turntable.mp4") == 3

def test_views_and_page(default_out):
    from PIL import Image
    assert Image.open(default_out / "views.png").size == (4 * 18 + 2, 3 * 18 + 2)  # 4 views x (RGB, normals, depth)
    html = (default_out / "mesh.html").read_text()
    assert "mesh3d" in html and "plotly" in html.lower() and len(html) > 1_000_000  # plotly.js inlined: opens offline

def test_formats_subset_and_bad_format(tmp_path):
    r = run("generate", "a green sphere", *SMALL, "--formats", "gif,ply", "--out", str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["mesh.ply", "metadata.json", "turntable.gif"]
    line = one_line_error(run("generate", "a green sphere", "--formats", "png,jpeg", "--out", str(tmp_path / "b")), 2)
    assert "'jpeg'" in line and "png,gif,mp4,glb,obj,ply,html" in line
    assert not (tmp_path / "b").exists()

def test_seeds_side_by_side(tmp_path):
    from PIL import Image
    import trimesh
    out = tmp_path / "s"
    r = run("generate", "a red cube wearing a blue hat", "--seeds", "0-2", *SMALL, "--formats", "png,gif,glb,html", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert Image.open(out / "turntable.gif").size == (3 * 16, 16)  # the seeds side by side in every frame
    assert Image.open(out / "views.png").size[1] > 3 * 3 * 18  # one block of rows per seed
    meshes = [trimesh.load(out / f"mesh_seed{s}.glb", force="mesh") for s in range(3)]
    assert len({m.vertices.shape[0] for m in meshes}) > 1 or not np.allclose(meshes[0].vertices, meshes[1].vertices)  # different objects
    assert json.loads((out / "metadata.json").read_text())["seeds"] == [0, 1, 2]
    assert (out / "mesh.html").read_text().count("seed ") >= 3

@pytest.mark.parametrize("args, needle", [
    (("--seeds", "3-1"), "empty"), (("--seeds", "x"), "'x'"), (("--seed", "1", "--seeds", "0-1"), "not both"),
    (("--frames", "0"), "--frames"), (("--mesh-res", "4"), "--mesh-res"), (("--threshold", "0"), "--threshold")])
def test_bad_options_one_line(tmp_path, capsys, args, needle):
    from instant3d.cli import main  # in-process: the console script is exercised above, this checks the messages fast
    assert main(["generate", "a cube", *args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("instant3d: error:") and needle in err[0], err
    assert not (tmp_path / "o").exists()

def test_prompt_file_skips_bad_lines(tmp_path):
    pf = tmp_path / "prompts.txt"
    pf.write_text("a red cube wearing a blue hat\nbad \x07 line\n\n# comment\n" + " ".join(["cube"] * 40) + "\na green sphere\n")
    out = tmp_path / "many"
    r = run("generate", "--prompts", str(pf), *SMALL, "--formats", "png,glb", "--no-progress", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "skipped line 2" in r.stderr and "skipped line 5" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["0001-a-red-cube-wearing-a-blue-hat", "0006-a-green-sphere", "index.json"]
    idx = json.loads((out / "index.json").read_text())
    assert [s["line"] for s in idx["skipped"]] == [2, 5] and len(idx["generated"]) == 2
    assert (out / "0006-a-green-sphere" / "mesh.glb").is_file()

def test_prompt_file_all_bad_is_an_error(tmp_path):
    pf = tmp_path / "p.txt"; pf.write_text("bad \x07 line\n")
    r = run("generate", "--prompts", str(pf), "--no-progress", "--out", str(tmp_path / "o"))
    assert r.returncode == 1 and "every line was skipped" in r.stderr
    one_line_error(run("generate", "--prompts", str(tmp_path / "none.txt"), "--out", str(tmp_path / "o2")), 2)
    one_line_error(run("generate", "--out", str(tmp_path / "o3")), 2)  # neither PROMPT nor --prompts

@pytest.mark.cuda
def test_explorer_and_outputs_on_cuda(tmp_path):
    "The same code paths with the model on a GPU (run with --runcuda on a GPU machine)."
    import torch
    from instant3d.explorer import ExplorerModel
    from instant3d.export import generate_outputs
    em = ExplorerModel.from_checkpoint(None, device="cuda")
    assert next(em.pipe.model.parameters()).is_cuda
    v = em.view("a red cube wearing a blue hat", seed=0, mode="normals", mesh_res=32)
    assert v["image"].shape[0] == 3 and len(v["mesh"].faces) > 0
    r = generate_outputs(em.pipe, "a red cube wearing a blue hat", tmp_path, frames=2, mesh_res=32)
    assert "mesh.glb" in r["files"] and r["mesh"][0]["faces"] > 0
