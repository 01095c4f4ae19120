"Run folders: checkpoints survive a kill at any instant of a folder swap, stale temporaries are cleared, one process per run folder (train, baseline, mini teacher, mini CLIP), the stopping signal in the training summary, corrupt or incomplete training states, file modes."
import json, os, shutil, signal, subprocess, sys, time
from pathlib import Path
import pytest, torch
import instant3d.files as F
from instant3d.files import RunFolderBusy, CorruptCheckpoint, clean_stale_tmp, run_lock, current_umask
from instant3d.train_config import tiny_train_config
from instant3d.train import run_training, Trainer, fingerprint

from conftest import EXE, ENV  # and the `teacher_dir` fixture


@pytest.fixture(scope="module")
def runs(tmp_path_factory, teacher_dir):
    "An uninterrupted 3-step run, and a run stopped after its step-2 checkpoint (copied by each test)."
    d = tmp_path_factory.mktemp("runs")
    cfg = tiny_train_config(teacher_dir, steps=3, checkpoint_every=2)
    full = run_training(cfg, d / "full", progress=False)
    run_training(cfg, d / "at2", progress=False, max_steps=2)
    return cfg, full, d / "at2"


class Killed(BaseException):
    "The process died here: nothing after it runs (no except or finally of instant3d.files does any cleanup)."


class _Proxy:
    def __init__(self, real, **over): self._real, self._over = real, over
    def __getattr__(self, name): return self._over[name] if name in self._over else getattr(self._real, name)


def _kill_at(monkeypatch, k: int | None, log: list):
    """Make the k-th rename or folder removal of instant3d.files that touches a checkpoint the instant the process dies.
    Calls are appended to `log`; a removal is cut in its middle (one file gone). After the kill, files does nothing."""
    real_replace, real_rmtree, real_remove = os.replace, shutil.rmtree, os.remove
    dead = [False]
    def hit(kind, *paths):
        if dead[0]: raise Killed
        if not any("checkpoint" in str(p) for p in paths): return False
        log.append((kind, *map(str, paths)))
        if len(log) == k: dead[0] = True; return True
        return False
    def replace(a, b):
        if hit("replace", a, b): raise Killed
        real_replace(a, b)
    def rmtree(p, ignore_errors=False, **kw):
        if dead[0]: return  # the cleanup in an except clause of a dead process never runs
        if hit("rmtree", p):
            files = sorted(q for q in Path(p).rglob("*") if q.is_file()) if Path(p).exists() else []
            if files: files[0].unlink()
            raise Killed
        real_rmtree(p, ignore_errors=ignore_errors, **kw)
    def remove(p):
        if not dead[0]: real_remove(p)
    monkeypatch.setattr(F, "os", _Proxy(os, replace=replace, remove=remove))
    monkeypatch.setattr(F, "shutil", _Proxy(shutil, rmtree=rmtree))


@pytest.fixture
def loaded_once(monkeypatch):
    "Load the tiny teacher, CLIP and text encoder once for the many short runs of a test (they are frozen)."
    import instant3d.train as T
    cache, real = {}, dict(guidance=T._load_guidance, clip=T._load_clip, text=T.TextEncoder.from_config)
    def once(name, key, *a, **k):
        if key not in cache: cache[key] = real[name](*a, **k)
        return cache[key]
    monkeypatch.setattr(T, "_load_guidance", lambda cfg, dev: once("guidance", ("g", cfg.sds, dev), cfg, dev))
    monkeypatch.setattr(T, "_load_clip", lambda cfg, dev: once("clip", ("c", cfg.clip.model, dev), cfg, dev))
    text = _Proxy(T.TextEncoder, from_config=lambda c, device=None, **k: once("text", ("t", c, device), c, device=device, **k))
    monkeypatch.setattr(T, "TextEncoder", text)


def _dot_entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name != ".lock")


def test_a_kill_at_any_instant_of_a_checkpoint_swap_resumes_to_the_same_weights(tmp_path, runs, monkeypatch, loaded_once):
    cfg, full, at2 = runs
    log = []
    with monkeypatch.context() as m:  # count the kill points of resuming step 2 -> 3 (one checkpoint swap)
        _kill_at(m, None, log)
        shutil.copytree(at2, tmp_path / "count")
        run_training(cfg, tmp_path / "count", progress=False, resume=True)
    kinds = [e[0] for e in log]
    # inside the temporary folder, before the first rename, between the renames, before the backup is deleted
    assert kinds[-3:] == ["replace", "replace", "rmtree"] and log[-3][1].endswith("/checkpoint"), log
    assert len(log) >= 6, log
    for k in range(1, len(log) + 1):
        run = tmp_path / f"k{k}"
        shutil.copytree(at2, run)
        with monkeypatch.context() as m:
            _kill_at(m, k, [])
            with pytest.raises(Killed): run_training(cfg, run, progress=False, resume=True)
        assert (run / "checkpoint").is_dir() or (run / ".checkpoint.old").is_dir(), (k, log[k - 1])
        F.clean_stale_tmp(run)  # what run_training does first, under the run folder's lock
        state = F.load_torch(run / "checkpoint" / "train_state.pt")  # a complete checkpoint: the old or the new one
        assert state["step"] in (2, 3) and (run / "checkpoint" / "model" / "model.safetensors").is_file(), (k, log[k - 1])
        s = run_training(cfg, run, progress=False, resume=True)
        assert (s["step"], s["fingerprint"]) == (3, full["fingerprint"]), (k, log[k - 1])
        assert _dot_entries(run) == [], (k, _dot_entries(run))


def test_stale_temporaries_are_cleared_when_a_run_starts(tmp_path, runs):
    cfg, full, at2 = runs
    run = tmp_path / "r"; shutil.copytree(at2, run)
    (run / ".checkpoint.tmpab12cd34").mkdir(); (run / ".checkpoint.tmpab12cd34" / "train_state.pt").write_bytes(b"half")
    (run / ".metrics.csv.ab12cd34.tmp").write_text("step")
    shutil.copytree(run / "checkpoint", run / ".checkpoint.old")  # a swap killed before its backup was deleted
    (run / ".lock").write_text(json.dumps(dict(pid=2 ** 22 + 1, host="gone", since="")))  # a dead process's lock
    s = run_training(cfg, run, progress=False, resume=True)
    assert s["fingerprint"] == full["fingerprint"] and _dot_entries(run) == []


def test_clean_stale_tmp_leaves_other_files(tmp_path):
    (tmp_path / "ck").mkdir(); (tmp_path / ".ck.tmpzz99yy88").mkdir(); (tmp_path / ".hidden").write_text("x")
    (tmp_path / ".ck.tmp").mkdir()  # not a name atomic_dir makes
    assert clean_stale_tmp(tmp_path) == [".ck.tmpzz99yy88"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ck.tmp", ".hidden", "ck"]
    assert clean_stale_tmp(tmp_path / "missing") == []


HOLD = ("import sys, time\nfrom instant3d.files import run_lock\n"
        "with run_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(600)\n")


@pytest.fixture
def held(tmp_path):
    "Another process holding the lock of tmp_path/'run'."
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True, env=ENV)
    assert p.stdout.readline().strip() == "held"
    yield p
    p.kill(); p.wait()


def test_a_second_process_is_refused_until_the_holder_dies(tmp_path, held, teacher_dir):
    run = tmp_path / "run"
    with pytest.raises(RunFolderBusy, match=f"pid {held.pid}") as e: run_training(tiny_train_config(teacher_dir), run)
    assert str(run) in str(e.value) and isinstance(e.value, ValueError)
    assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing else was written
    held.kill(); held.wait()  # the kernel drops the lock of a dead process
    with run_lock(run): assert json.loads((run / ".lock").read_text())["pid"] == os.getpid()


def test_two_locks_in_one_process_conflict(tmp_path):
    with run_lock(tmp_path / "r"):
        with pytest.raises(RunFolderBusy, match=f"pid {os.getpid()}"):
            with run_lock(tmp_path / "r"): pass
    with run_lock(tmp_path / "r"): pass


def test_cli_train_into_a_busy_folder_is_one_error_line(tmp_path, held, teacher_dir):
    cfg = tmp_path / "cfg.json"
    from instant3d.conventions import config_to_dict
    cfg.write_text(json.dumps(config_to_dict(tiny_train_config(teacher_dir, steps=2))))
    r = subprocess.run([EXE, "train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"],
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 2 and f"in use by pid {held.pid}" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("instant3d: error:"), r.stderr


def test_baseline_teacher_and_mini_clip_refuse_a_busy_folder(tmp_path, teacher_dir):
    from types import SimpleNamespace
    from instant3d.baseline import baseline_from_args
    from instant3d.mini.teacher import TeacherConfig
    from instant3d.mini.teacher_train import train_teacher
    from instant3d.mini.clip import MiniClipConfig
    from instant3d.mini.clip_train import train_mini_clip
    run = tmp_path / "run"
    args = SimpleNamespace(preset="mini", prompts=["a red cube"], prompt_file=None, views_pp=2, views_per_step=2, seed=None,
                           set=[f"train.sds.teacher={teacher_dir}"], eval_at=None, device="cpu", no_progress=True, out=str(run))
    with run_lock(run):
        with pytest.raises(RunFolderBusy, match="in use by pid"): baseline_from_args(args)
        with pytest.raises(RunFolderBusy, match="in use by pid"): train_teacher(TeacherConfig.tiny(), teacher_dir, run)
        with pytest.raises(RunFolderBusy, match="in use by pid"): train_mini_clip(MiniClipConfig.tiny(), run)
    assert sorted(p.name for p in run.iterdir()) == [".lock"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_the_summary_names_the_stopping_signal(tmp_path, teacher_dir, signum, loaded_once):
    t = Trainer(tiny_train_config(teacher_dir, steps=4), tmp_path / "run")
    sds = t.guidance.sds
    def sds_then_signal(*a, **k):
        out = sds(*a, **k); os.kill(os.getpid(), signum); time.sleep(0.05); return out
    t.guidance.sds = sds_then_signal
    s = t.fit(progress=False)
    assert (s["step"], s["stopped"], s["signal"]) == (1, True, int(signum)) and "views_pp" in s and "last" in s
    t.guidance.sds = sds
    assert t.fit(progress=False)["signal"] is None


def test_corrupt_or_missing_train_state_on_resume(tmp_path, runs):
    cfg, full, at2 = runs
    run = tmp_path / "r"; shutil.copytree(at2, run)
    st = run / "checkpoint" / "train_state.pt"
    st.write_bytes(st.read_bytes()[:200])
    with pytest.raises(CorruptCheckpoint, match="is corrupt") as e: run_training(cfg, run, progress=False, resume=True)
    assert str(st) in str(e.value) and "init_from=" in str(e.value) and "\n" not in str(e.value)
    torch.save({"step": 2}, st)  # readable, but not a state of this trainer
    with pytest.raises(CorruptCheckpoint, match="does not fit"): run_training(cfg, run, progress=False, resume=True)
    st.unlink()
    with pytest.raises(ValueError, match="train_state.pt is missing") as e: run_training(cfg, run, progress=False, resume=True)
    assert "no checkpoint/" not in str(e.value)


def test_cli_resume_of_a_corrupt_state_is_one_error_line(tmp_path, runs):
    cfg, full, at2 = runs
    run = tmp_path / "r"; shutil.copytree(at2, run)
    (run / "checkpoint" / "train_state.pt").write_bytes(b"PK\x03\x04 not a zip")
    r = subprocess.run([EXE, "train", "--config", str(run / "config.json"), "--out", str(run), "--resume", "--no-progress"],
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 2 and "is corrupt" in r.stderr and "train_state.pt" in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]  # above it: the loaders' progress bars
    assert last.startswith("instant3d: error: --resume:") and r.stderr.count("instant3d: error") == 1, r.stderr


def test_written_files_get_the_normal_mode(tmp_path, runs):
    cfg, full, at2 = runs
    file_mode, dir_mode = 0o666 & ~current_umask(), 0o777 & ~current_umask()
    run = at2.parent / "full"
    for p in [run / "model" / "model.safetensors", run / "model" / "config.json", run / "checkpoint" / "train_state.pt",
              run / "checkpoint" / "model" / "model.safetensors", run / "metrics.csv", run / ".lock"]:
        assert p.stat().st_mode & 0o777 == file_mode, p
    for p in [run / "model", run / "checkpoint", run / "checkpoint" / "model"]:
        assert p.stat().st_mode & 0o777 == dir_mode, p


def test_mini_teacher_resume_of_a_corrupt_or_missing_state(tmp_path):
    from instant3d.mini.teacher import TeacherConfig
    from instant3d.mini.teacher_train import _prepare_run, _resume
    (tmp_path / "checkpoint").mkdir()
    with pytest.raises(CorruptCheckpoint, match="train_state.pt is missing"):
        _prepare_run(TeacherConfig.tiny(), tmp_path, tmp_path, resume=True)
    (tmp_path / "checkpoint" / "train_state.pt").write_bytes(b"\x80\x04 cut")
    with pytest.raises(CorruptCheckpoint, match="is corrupt") as e: _resume(None, tmp_path)
    assert str(tmp_path / "checkpoint" / "train_state.pt") in str(e.value) and "--init-from" in str(e.value)


def test_safetensors_with_metadata_are_byte_stable(tmp_path):
    import hashlib
    from safetensors import safe_open
    from instant3d.files import save_safetensors, safetensors_bytes
    t = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(3)}
    meta = {"format": "pt", "library": "instant3d", "extra": "1"}
    assert len({hashlib.sha256(safetensors_bytes(t, meta)).hexdigest() for _ in range(20)}) == 1
    save_safetensors(t, tmp_path / "m.safetensors", meta)
    with safe_open(tmp_path / "m.safetensors", "pt") as f:
        assert f.metadata() == meta and torch.equal(f.get_tensor("w"), t["w"])
    assert (tmp_path / "m.safetensors").stat().st_mode & 0o777 == 0o666 & ~current_umask()
