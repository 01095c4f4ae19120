"""Speed of the shipped mini Instant3D on this machine: generation and one training step.

    python benchmarks/bench_mini.py [--repeats 10] [--train-steps 20] [--out benchmarks/results/mini_cpu.json]

Measures:
  - generate: prompt -> 4 views at 64x64 with the shipped default checkpoint, models already loaded (text encoding,
    triplane, rendering), median of `--repeats` prompts drawn from the mini test split; the issue's target is under 1 s;
  - the same through the command line (`instant3d generate`, a fresh process: imports and loading included);
  - one mini training step (the `mini` training preset: batch 8, 32x32 renders, 32+32 samples, adaptive Perp-Neg,
    CLIP loss, the shipped teacher), median over `--train-steps` steps after 3 warm-up steps; views/s = batch / step time.
Writes the JSON and rewrites the mini section of BENCHMARKS.md.
"""
import argparse, json, os, platform, tempfile, time
from _common import ROOT, generate_cli, write_atomic, replace_section

START, END = "<!-- mini:cpu start -->", "<!-- mini:cpu end -->"

def median(xs): xs = sorted(xs); return xs[len(xs) // 2]

def bench_generate(repeats: int) -> dict:
    import torch
    from instant3d.generator import default_checkpoint
    from instant3d.generator import Instant3DPipeline
    from instant3d.prompts import prompt_set
    ck = default_checkpoint("mini")
    if ck is None: raise SystemExit("no shipped mini checkpoint (instant3d/weights/mini): nothing to benchmark")
    t0 = time.perf_counter(); pipe = Instant3DPipeline.from_pretrained(ck); load_s = time.perf_counter() - t0
    prompts = prompt_set("mini", "test")[:repeats + 1]
    pipe(prompts[0], seed=0)  # warm-up
    ts = []
    for p in prompts[1:]:
        t0 = time.perf_counter(); r = pipe(p, seed=0); ts.append(time.perf_counter() - t0)
    return dict(load_s=round(load_s, 3), generate_median_s=round(median(ts), 4), generate_min_s=round(min(ts), 4),
                views=int(r["rgb"].shape[1]), size=list(r["rgb"].shape[-2:]), repeats=repeats)

def bench_cli() -> dict:
    wall, meta = generate_cli()
    return dict(cli_wall_s=round(wall, 2), cli_reported_s=meta["seconds"], checkpoint=meta["checkpoint"])

def bench_train(steps: int) -> dict:
    from dataclasses import replace
    from instant3d.train_config import train_preset
    from instant3d.train import Trainer
    cfg = replace(train_preset("mini"), checkpoint_every=0, preview_every=0, eval_every=0)
    with tempfile.TemporaryDirectory() as d:
        t = Trainer(cfg, d)
        for _ in range(3): t.train_step()
        ts = []
        for _ in range(steps):
            t0 = time.perf_counter(); t.train_step(); ts.append(time.perf_counter() - t0)
    m = median(ts)
    return dict(train_step_median_s=round(m, 4), train_steps_per_s=round(1 / m, 3), train_views_per_s=round(cfg.batch_size / m, 2),
                batch_size=cfg.batch_size, render_size=cfg.render_size, train_steps_timed=steps)

def write_markdown(res: dict):
    block = "\n".join([START,
        f"Command: `python benchmarks/bench_mini.py`  ",
        f"Hardware: {res['hardware']}", "",
        "| measurement | figure | target |", "|---|---|---|",
        f"| generate, prompt -> 4 views at {res['size'][0]}x{res['size'][1]}, models loaded (median of {res['repeats']} prompts) | "
        f"{1000 * res['generate_median_s']:.0f} ms | under 1 s |",
        f"| loading the shipped pipeline (text encoder + generator) | {res['load_s']:.2f} s | |",
        f"| `instant3d generate` as a fresh process (imports, loading, views.png, metadata.json) | {res['cli_wall_s']:.2f} s wall | |",
        f"| mini training step (batch {res['batch_size']}, {res['render_size']}x{res['render_size']} renders, adaptive Perp-Neg, CLIP loss; median of {res['train_steps_timed']}) | "
        f"{1000 * res['train_step_median_s']:.0f} ms = {res['train_views_per_s']:.1f} views/s | |",
        END])
    replace_section(block, START, END, "## Mini Instant3D: generation and training (issue 4)")

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--train-steps", type=int, default=20)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "mini_cpu.json"))
    ap.add_argument("--no-markdown", action="store_true")
    a = ap.parse_args()
    import torch
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    res = dict(hardware=f"{os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}, {torch.get_num_threads()} threads")
    res.update(bench_generate(a.repeats)); print(json.dumps(res), flush=True)
    res.update(bench_cli()); print(json.dumps(res), flush=True)
    res.update(bench_train(a.train_steps)); print(json.dumps(res), flush=True)
    write_atomic(a.out, json.dumps(res, indent=1))
    if not a.no_markdown: write_markdown(res)

if __name__ == "__main__": main()
