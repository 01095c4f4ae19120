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
    "Write `text` to `path` through the package's atomic writer (creating the folder)."
    from instant3d.files import write_text
    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, text)

def replace_section(block: str, start: str, end: str, heading: str):
    "Put `block` (which begins with `start` and ends with `end`) into BENCHMARKS.md: in place of the old one, else after `heading`."
    md = ROOT / "BENCHMARKS.md"
    text = md.read_text() if md.exists() else "# Benchmarks\n"
    if start in text: text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else: text = text.rstrip() + ("\n\n" + heading + "\n" if heading not in text else "\n\n") + block + "\n"
    write_atomic(md, text)

def mini_step_inputs(kind: str, device: str = "cpu"):
    """(model in train mode, config, tokens [8, L, D]) for the mini training-step benchmarks.
    kind "random": seeded random weights, random tokens (density everywhere: normals at nearly every sample, the costliest case);
    "shipped": the shipped mini model on 8 training prompts (what a step meets once the model has learned surfaces)."""
    import torch
    from instant3d.generator import Instant3D, Instant3DPipeline, preset_config
    if kind == "shipped":
        from instant3d.mini.world import prompts as world_prompts
        pipe = Instant3DPipeline.from_pretrained(Path(__file__).parent.parent / "instant3d" / "weights" / "mini")
        m, cfg = pipe.model.float().to(device), pipe.config
        tok = pipe.text_encoder.encode(world_prompts(None, "train")[:8]).tokens.float().to(device)
    elif kind == "random":
        torch.manual_seed(0); cfg = preset_config("mini"); m = Instant3D(cfg).to(device)
        tok = torch.randn(8, cfg.token_to_plane.n_tokens, cfg.token_to_plane.token_dim, device=device)
    else: raise ValueError(f"mini_step_inputs: kind={kind!r}; accepted 'random', 'shipped'")
    return m.train(), cfg, tok
