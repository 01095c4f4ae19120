"""`--prompts FILE` also reads a JSON prompt library: a list, or an object with train / val / test lists."""
import json, subprocess, warnings
import pytest
from conftest import EXE, ENV
from instant3d.prompts import file_split, load_prompt_file, prompt_set, read_prompt_library, split_prompts
from instant3d.train_config import prompt_split
from instant3d.cli import build_parser
from instant3d.commands import resolve_train_config


def write(tmp_path, obj, name="daily.json"):
    f = tmp_path / name
    f.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return f


def test_list_is_split_like_a_text_file(tmp_path):
    prompts = [f"a photo of thing {i}" for i in range(20)]
    f, t = write(tmp_path, prompts), tmp_path / "daily.txt"
    t.write_text("\n".join(prompts))
    assert read_prompt_library(f) == prompts and load_prompt_file(f) == prompts
    assert file_split(f, seed=5) == file_split(t, seed=5) == split_prompts(prompts, 5)
    assert prompt_split(str(f), 5)["train"] == split_prompts(prompts, 5)["train"]


def test_object_keeps_its_split(tmp_path):
    f = write(tmp_path, {"train": ["a cup", "a pot", "a pan"], "val": ["a fork"], "test": ["a knife", "a cup"]})
    with pytest.warns(UserWarning, match="kept in 'train' only"): s = prompt_split(str(f))
    assert s["train"] == ["a cup", "a pan", "a pot"] and s["test"] == ["a fork", "a knife"]
    assert s["all"] == s["train"] + s["test"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert prompt_set("file", "all", file=f) == sorted({"a cup", "a pot", "a pan", "a fork", "a knife"})
        assert set(load_prompt_file(f)) == {"a cup", "a pot", "a pan", "a fork", "a knife"}


@pytest.mark.parametrize("bad,msg", [
    ("{not json", "not readable JSON"), ('"a cup"', "holds a str"), ("[]", "empty list"),
    ('["a cup", 3]', "[1] = 3"), ('["a cup", "  "]', "non-empty string"), ('{"train": ["a"], "dev": ["b"]}', "'dev'"),
    ('{"val": ["a"]}', "no non-empty 'train'"), ('{"train": {"a": 1}}', "expected a list")])
def test_bad_libraries_are_named(tmp_path, bad, msg):
    f = write(tmp_path, bad)
    with pytest.raises(ValueError, match="prompt library|daily.json") as ei: file_split(f)
    assert msg in str(ei.value) and str(f) in str(ei.value)


def test_train_cli_reads_a_library(tmp_path):
    f = write(tmp_path, {"train": ["a cup", "a pot"], "test": ["a fork"]})
    cfg = resolve_train_config(build_parser().parse_args(["train", "--preset", "mini", "--prompts", str(f),
                                                          "--out", str(tmp_path / "run")]))
    assert cfg.prompts == str(f) and prompt_split(cfg.prompts)["test"] == ["a fork"]


def test_train_cli_refuses_a_bad_library_in_one_line(tmp_path):
    f = write(tmp_path, {"training": ["a cup"]})
    p = subprocess.run([EXE, "train", "--preset", "mini", "--prompts", str(f), "--out", str(tmp_path / "run")],
                       capture_output=True, text=True, env=ENV)
    assert p.returncode == 2 and p.stderr.count("\n") == 1
    assert p.stderr.startswith("instant3d: error:") and "'training'" in p.stderr and "accepted" in p.stderr
    assert not (tmp_path / "run").exists()
