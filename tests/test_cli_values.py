"CLI values and endings: typed `--set`, seed ranges, exit statuses of interrupted commands, `instant3d eval` output."
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest
from instant3d.cli import main, signal_status, SEED_LIMIT
from instant3d.train_config import apply_overrides, train_preset

EXE = str(Path(sys.executable).parent / "instant3d")
ENV = dict(os.environ, HF_HUB_OFFLINE="1")

def one_line(err: str) -> str:
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("instant3d: error:"), err
    return lines[0]

# --- `--set` parses each field by its declared type

@pytest.mark.parametrize("text,want", [("true", True), ("False", False), ("1", True), ("0", False), ("YES", True),
                                       ("no", False)])
def test_set_bool(text, want):
    assert apply_overrides(train_preset("mini"), [f"bf16={text}"]).bf16 is want

@pytest.mark.parametrize("item,want", [("steps=12", 12), ("steps=40_000", 40_000), ("lr=0.002", 0.002), ("lr=1e-3", 1e-3),
                                       ("sds.guidance_scale=50", 50.0), ("prompts=animals", "animals"),
                                       ("prompts=\"animals\"", "animals"), ("grad_clip=none", None),
                                       ("grad_clip=NULL", None), ("grad_clip=1.5", 1.5), ("render_size=none", None),
                                       ("render_size=24", 24), ("init_from=null", None), ("background=white", "white"),
                                       ("betas=[0.8, 0.9]", (0.8, 0.9)), ("betas=0.8,0.9", (0.8, 0.9)),
                                       ("generator.style.use_noise=false", False), ("perp_neg.mode=fixed", "fixed")])
def test_set_types(item, want):
    key, _ = item.split("=", 1)
    c = apply_overrides(train_preset("mini"), [item])
    got = c
    for k in key.split("."): got = getattr(got, k)
    assert got == want and type(got) is type(want)

def test_set_float_from_int_is_float():
    assert type(apply_overrides(train_preset("mini"), ["lr=1"]).lr) is float

@pytest.mark.parametrize("item,accepted", [("bf16=maybe", "true/false, 1/0 or yes/no"), ("bf16=2", "true/false"),
                                           ("lr=nan", "a finite number"), ("lr=inf", "a finite number"),
                                           ("lr=-Infinity", "a finite number"), ("lr=fast", "a finite number"),
                                           ("sds.guidance_scale=NaN", "a finite number"), ("steps=1.5", "an integer"),
                                           ("steps=true", "an integer"), ("grad_clip=nan", "a finite number or none"),
                                           ("render_size=big", "an integer or none"),
                                           ("betas=[0.9]", "a list of 2 items"), ("betas=[0.9, nan]", "a list of 2"),
                                           ("betas=x", "a list of 2 items")])
def test_set_rejects_with_key_value_and_accepted(item, accepted):
    with pytest.raises(ValueError) as e: apply_overrides(train_preset("mini"), [item])
    msg = str(e.value)
    assert f"--set {item}" in msg and accepted in msg, msg

@pytest.mark.parametrize("item,match", [("nope=1", "unknown key 'nope'"), ("sds.nope=1", "unknown key 'nope' in SDSConfig"),
                                        ("steps", "expected key=value"), ("sds=1", "whole config"),
                                        ("steps=0", "--set steps=0: TrainConfig.steps"),
                                        ("seed=-1", "--set seed=-1"), ("seed=9223372036854775808", "seed")])
def test_set_other_errors(item, match):
    with pytest.raises(ValueError, match=match.replace("[", r"\[")): apply_overrides(train_preset("mini"), [item])

def test_set_baseline_config_nested():
    from instant3d.baseline import BaselineConfig
    c = apply_overrides(BaselineConfig(), ["lr=0.03", "train.sds.guidance_scale=50"])
    assert c.lr == 0.03 and c.train.sds.guidance_scale == 50.0
    with pytest.raises(ValueError, match="train.bf16=maybe"): apply_overrides(BaselineConfig(), ["train.bf16=maybe"])

@pytest.mark.parametrize("argv", [["train", "--set", "bf16=maybe"], ["train", "--set", "lr=nan"],
                                  ["baseline", "--prompts", "a red cube", "--set", "lr=inf"],
                                  ["reproduce", "--quick", "--dry-run", "--set", "bf16=maybe"]])
def test_cli_set_errors_are_one_line(argv, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    line = one_line(capsys.readouterr().err)
    assert argv[-1] in line and "accepted" in line
    assert not (tmp_path / "o").exists()

# --- seeds: 0 <= seed < 2**63

BAD_SEEDS = ["-1", str(SEED_LIMIT), "99999999999999999999", "1.5"]

@pytest.mark.parametrize("seed", BAD_SEEDS)
@pytest.mark.parametrize("cmd", [["generate", "a cube"], ["prompts", "mini"], ["eval"],
                                 ["baseline", "--prompts", "a cube"], ["world", "train-clip", "--out", "x"],
                                 ["world", "train-teacher", "--out", "x"], ["world", "eval"]])
def test_seed_out_of_range(cmd, seed, capsys):
    assert main([*cmd, "--seed", seed]) == 2
    line = one_line(capsys.readouterr().err)
    assert seed in line and "[0, 2**63)" in line

@pytest.mark.parametrize("seeds", ["0-99999999999999999999", f"{SEED_LIMIT}", "0-9000000000000000000", "3,5-9999"])
def test_generate_seeds_out_of_range(seeds, tmp_path, capsys):
    t0 = time.perf_counter()
    assert main(["generate", "a cube", "--seeds", seeds, "--out", str(tmp_path / "o")]) == 2
    assert time.perf_counter() - t0 < 60  # refused before any range is expanded
    assert seeds in one_line(capsys.readouterr().err)

def test_reproduce_seeds_out_of_range(capsys):
    assert main(["reproduce", "--quick", "--dry-run", "--seeds", "0", str(SEED_LIMIT)]) == 2
    assert str(SEED_LIMIT) in one_line(capsys.readouterr().err)

def test_largest_seed_accepted():
    from instant3d.cli import build_parser
    assert build_parser().parse_args(["generate", "x", "--seed", str(SEED_LIMIT - 1)]).seed == SEED_LIMIT - 1

# --- exit statuses of interrupted commands

def test_signal_status():
    assert signal_status(None) == 130 and signal_status(signal.SIGINT) == 130 and signal_status(signal.SIGTERM) == 143

@pytest.mark.parametrize("signum,status,word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_main_maps_signals(monkeypatch, capsys, signum, status, word):
    "Any command (here `prompts`, made slow) ended by a signal exits 128 + N, with one line on stderr."
    import instant3d.commands as C
    def slow(args):
        os.kill(os.getpid(), signum)
        time.sleep(30)
    monkeypatch.setattr(C, "cmd_prompts", slow)
    # Python's own SIGINT handler: a shell starts background jobs (nohup, `&`) with SIGINT ignored, and an
    # earlier in-process training test may have left its stop-flag handler behind
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try: assert main(["prompts", "mini"]) == status
    finally: signal.signal(signal.SIGINT, old_int)
    assert capsys.readouterr().err.strip() == f"instant3d: {word}"

TINY = ["--set", "steps=100000", "batch_size=1", "render_size=16", "generator.render.n_samples=8",
        "generator.render.n_importance=8", "eval_every=0", "preview_every=0", "checkpoint_every=0", "log_every=1",
        "--no-progress"]

@pytest.mark.parametrize("signum,status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_interrupted_train_exits_nonzero_and_resumable(tmp_path, signum, status):
    out = tmp_path / "run"
    p = subprocess.Popen([EXE, "train", "--preset", "mini", "--out", str(out), *TINY], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=ENV)
    log, t0 = out / "metrics.csv", time.time()
    while not (log.is_file() and len(log.read_text().splitlines()) >= 3):  # header + two steps: inside the loop
        assert p.poll() is None and time.time() - t0 < 300, p.communicate()
        time.sleep(0.2)
    p.send_signal(signum)
    so, se = p.communicate(timeout=300)
    assert p.returncode == status, (so, se)
    assert "resumable with --resume" in so and "Traceback" not in se
    assert (out / "checkpoint").is_dir() and not (out / "model").exists()

# --- instant3d eval: valid JSON, no silent overwrite

def test_eval_default_csv_names_checkpoint(tmp_path, monkeypatch, capsys):
    from instant3d.generator import default_checkpoint
    monkeypatch.chdir(tmp_path)
    argv = ["eval", "--max-prompts", "1", "--views", "1", "--seed", "5", "--json"]
    assert main(argv) == 0
    io = capsys.readouterr()
    m = json.loads(io.out)
    ck = default_checkpoint("mini").resolve()
    want = Path("outputs") / "eval" / f"{ck.parent.name}-{ck.name}_test_seed5.csv"
    assert m["csv"] == str(want) and (tmp_path / want).is_file()
    assert "replacing" not in io.err
    assert main(argv) == 0  # the same evaluation again: said on stderr
    assert f"replacing {want}" in capsys.readouterr().err

def test_eval_explicit_csv_replacement_is_said(tmp_path, capsys):
    csv = tmp_path / "e.csv"; csv.write_text("earlier\n")
    assert main(["eval", "--max-prompts", "1", "--views", "1", "--csv", str(csv), "--json"]) == 0
    io = capsys.readouterr()
    assert f"replacing {csv}" in io.err and json.loads(io.out)["csv"] == str(csv)
    assert csv.read_text() != "earlier\n"

def test_eval_nonfinite_is_one_line_error(tmp_path, monkeypatch, capsys):
    import instant3d.evaluate as E
    real = E.evaluate_clip_rp
    def nan_rp(*a, **k):
        m = real(*a, **k); m["clip_rp"] = float("nan")
        for r in m["per_prompt"]: r["clip_rp"] = float("nan")
        return m
    monkeypatch.setattr(E, "evaluate_clip_rp", nan_rp)
    csv = tmp_path / "e.csv"
    assert main(["eval", "--max-prompts", "1", "--views", "1", "--csv", str(csv), "--json"]) == 1
    io = capsys.readouterr()
    assert io.out == "" and not csv.exists()
    line = one_line(io.err)
    assert "non-finite clip_rp" in line and "checkpoint" in line


def test_no_progress_turns_off_the_loading_bars(monkeypatch, tmp_path):
    "`--no-progress` reaches the weight-loading bars of transformers and diffusers, not only our own tqdm bar."
    import instant3d.cli as cli
    calls = []
    monkeypatch.setattr(cli, "quiet_loading", lambda: calls.append(1))
    assert cli.main(["train", "--out", str(tmp_path / "run"), "--resume", "--no-progress"]) == 2  # fails fast: no checkpoint
    assert calls == [1]
    assert cli.main(["train", "--out", str(tmp_path / "run"), "--resume"]) == 2
    assert calls == [1]  # without the flag the bars stay
