"""Helpers shared by the benchmark scripts: a fresh `instant3d generate` process, atomic writes, BENCHMARKS.md sections."""
import json, os, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def generate_cli(prompt: str = "a red cube wearing a blue hat") -> tuple[float, dict]:
    "Wall seconds of `instant3d generate PROMPT` as a fresh process, and the metadata.json it wrote."
    exe = Path(sys.executable).with_name("instant3d")
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        subprocess.run([str(exe), "generate", prompt, "--out", d], check=True, capture_output=True)
        wall = time.perf_counter() - t0
        return wall, json.loads((Path(d) / "metadata.json").read_text())

def write_atomic(path, text: str):
    "Write `text` to a temporary file beside `path` (mode 644), then rename it into place."
    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}", suffix=".tmp")
    with os.fdopen(fd, "w") as f: f.write(text)
    os.chmod(tmp, 0o644); os.replace(tmp, path)

def replace_section(block: str, start: str, end: str, heading: str):
    "Put `block` (which begins with `start` and ends with `end`) into BENCHMARKS.md: in place of the old one, else after `heading`."
    md = ROOT / "BENCHMARKS.md"
    text = md.read_text() if md.exists() else "# Benchmarks\n"
    if start in text: text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else: text = text.rstrip() + ("\n\n" + heading + "\n" if heading not in text else "\n\n") + block + "\n"
    write_atomic(md, text)
