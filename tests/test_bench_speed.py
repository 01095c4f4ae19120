"""benchmarks/bench_speed.py in its tiny mode, end to end: every variant runs in its own process and is reported."""
import json, subprocess, sys
from pathlib import Path
from conftest import ENV

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_speed as B  # noqa: E402


def test_off_variant_is_the_package_list():
    "The benchmark's `off` is the package's one list of speed levers off (instant3d.train_config)."
    from instant3d.train_config import SPEED_LEVERS_OFF
    assert B.levers()["off"] == list(SPEED_LEVERS_OFF) and B.levers()["on"] == []


def test_tiny_mode_runs_end_to_end(tmp_path):
    out = tmp_path / "speed.json"
    md_before = (ROOT / "BENCHMARKS.md").read_text()
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_speed.py"), "--tiny", "--out", str(out),
                        "--no-markdown"], capture_output=True, text=True, env=dict(ENV, OMP_NUM_THREADS="2"), timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(out.read_text())
    assert set(r["rows"]) >= {"fresh/off", "fresh/on", "trained/off", "trained/on"}
    assert all(v["step_ms"] > 0 and v["views_per_s"] > 0 for v in r["rows"].values())
    assert "cores" in r["hardware"] and "native bf16" in r["hardware"] and r["rounds"] == 1
    assert (ROOT / "BENCHMARKS.md").read_text() == md_before
    assert "trained/on" in p.stdout and "views/s" in p.stdout
