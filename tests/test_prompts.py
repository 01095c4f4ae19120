"Prompt sets and `instant3d prompts` / `instant3d world render` as a user runs them."
import subprocess, sys
from pathlib import Path
import pytest
from instant3d.prompts import animals_prompts, portraits_prompts, prompt_set, split_prompts, load_prompt_file

EXE = str(Path(sys.executable).parent / "instant3d")
run = lambda *a: subprocess.run([EXE, *a], capture_output=True, text=True, timeout=300)

def test_paper_sets_exact_counts():
    a, p = animals_prompts(), portraits_prompts()
    assert len(set(a)) == len(a) == 3150 and len(set(p)) == len(p) == 400
    assert not any(" null" in x or "  " in x or x.endswith(" ") for x in a + p)

@pytest.mark.parametrize("name,n_train,n_test", [("animals", 1890, 1260), ("portraits", 240, 160)])
def test_split_sizes_disjoint_reproducible(name, n_train, n_test):
    tr, te = prompt_set(name, "train"), prompt_set(name, "test")
    assert (len(tr), len(te)) == (n_train, n_test) and not set(tr) & set(te)
    assert prompt_set(name, "train") == tr

def test_cli_prompts_counts():
    r = run("prompts", "animals", "--split", "train")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 1890
    r = run("prompts", "mini", "--split", "all")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == len(prompt_set("mini"))

def test_cli_prompts_errors():
    for args in (("zoo",), ("animals", "--split", "val")):
        r = run("prompts", *args)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith("instant3d: error:"), r.stderr

def test_prompt_file_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"): load_prompt_file(tmp_path / "none.txt")
    (tmp_path / "e.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="no prompts"): load_prompt_file(tmp_path / "e.txt")

def test_world_render_cli(tmp_path):
    r = run("world", "render", "a green sphere sitting on a stone and wearing a scarf", "--frames", "3", "--size", "32", "--out", str(tmp_path / "w"))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["metadata.json", "turntable.gif", "views.png"]
    from PIL import Image
    assert Image.open(tmp_path / "w" / "turntable.gif").n_frames == 3
    r = run("world", "render", "a purple dragon", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "not a mini-world prompt" in r.stderr and not (tmp_path / "x").exists()

def test_world_render_cli_world(tmp_path):
    "`--world v4` draws the face of a smiling prompt; the word is refused, with nothing written, in a world without it."
    r = run("world", "render", "a smiling red cube", "--world", "v4", "--frames", "2", "--size", "32", "--out", str(tmp_path / "w"))
    assert r.returncode == 0, r.stderr
    import json
    assert json.loads((tmp_path / "w" / "metadata.json").read_text())["world"] == "v4"
    r = run("world", "render", "a smiling red cube", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "a word of world v4 only: world v1" in r.stderr and not (tmp_path / "x").exists()


def test_cli_prompts_world():
    "`--world` lists another mini world's prompts (world v4: its own split, with 'smiling'); a bad world or a non-mini set is one error line."
    r = run("prompts", "mini", "--world", "v4", "--split", "test")
    assert r.returncode == 0 and r.stdout.splitlines() == prompt_set("mini", "test", version="v4")
    assert any("smiling" in p for p in r.stdout.splitlines()) and not any("smiling" in p for p in prompt_set("mini", "test"))
    for args, needle in ((("mini", "--world", "v9"), "'v9'"), (("animals", "--world", "v4"), "only the mini sets")):
        r = run("prompts", *args)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr
