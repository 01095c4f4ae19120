"""Generator and renderer speed/memory on this machine's CPU (and on CUDA when present).

    python benchmarks/bench_generator.py [--quick] [--device cpu|cuda] [--out benchmarks/results/generator_<device>.json]

Measures, each in a fresh subprocess so peak memory is its own:
  - generator forward (triplane) time and peak memory, batch 1: mini and official presets;
  - render time of one 64x64 and one 256x256 view with 64+64 samples (official field, random triplane);
  - mini training step: forward + backward at batch 8, 64x64 renders, 32+32 samples (the issue's CPU target).
Peak memory on CPU is the peak resident set size sampled every 2 ms during the timed call, minus the resident size
just before it (so it counts activations, not weights); on CUDA it is torch.cuda.max_memory_allocated.
Writes the JSON and rewrites the generator table of BENCHMARKS.md.
"""
import argparse, json, os, platform, subprocess, sys, threading, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from instant3d.files import write_text as write_atomic  # the package's one atomic writer

def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"): return int(line.split()[1]) / 1024
    return float("nan")

class PeakRSS:
    "Sample resident memory in a thread while a block runs."
    def __enter__(self):
        self.base, self.peak, self.stop = rss_mb(), rss_mb(), False
        def loop():
            while not self.stop: self.peak = max(self.peak, rss_mb()); time.sleep(0.002)
        self.t = threading.Thread(target=loop, daemon=True); self.t.start(); return self
    def __exit__(self, *a):
        self.stop = True; self.t.join(); self.peak = max(self.peak, rss_mb())
    @property
    def delta_mb(self): return self.peak - self.base

def timed(fn, device, repeats, warmup=1):
    import torch
    sync = (lambda: torch.cuda.synchronize()) if device == "cuda" else (lambda: None)
    for _ in range(warmup): fn(); sync()
    if device == "cuda": torch.cuda.reset_peak_memory_stats()
    ts = []
    with PeakRSS() as mem:
        for _ in range(repeats):
            t0 = time.perf_counter(); fn(); sync(); ts.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else mem.delta_mb
    ts.sort()
    return {"median_s": ts[len(ts) // 2], "min_s": ts[0], "repeats": repeats, "peak_mem_mb": round(peak, 1)}

def case(name, device, dtype, repeats):
    "Run one measurement (in this process)."
    import torch
    from instant3d.generator import Instant3D, preset_config
    from instant3d.cameras import four_views
    from instant3d.render import render
    torch.manual_seed(0)
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    ac = torch.autocast(device_type=device, dtype=dt, enabled=dtype != "fp32")
    if name.startswith("forward_"):
        cfg = preset_config(name.split("_", 1)[1])
        m = Instant3D(cfg).to(device).eval()
        t = cfg.token_to_plane
        tok = torch.randn(1, t.n_tokens, t.token_dim, device=device)
        def fn():
            with torch.no_grad(), ac: m.triplane(tok, noise=torch.zeros(1, cfg.style.noise_dim, device=device))
        return timed(fn, device, repeats)
    if name.startswith("render_"):
        size = int(name.split("_")[1])
        import dataclasses
        cfg = preset_config("official")
        from instant3d.field import TriplaneField
        field = TriplaneField(cfg.field).to(device)
        tp = torch.randn(1, 3, cfg.field.channels, 256, 256, device=device) * 0.1
        rc = dataclasses.replace(cfg.render, height=size, width=size, n_samples=64, n_importance=64)
        cams = four_views(cfg.camera)[:1].to(device)
        def fn():
            with torch.no_grad(), ac: render(field, tp, cams, cfg=rc, shading="albedo", perturb=False)
        return timed(fn, device, repeats)
    if name.startswith("train_step_mini"):
        from instant3d.cameras import sample_cameras
        from instant3d.field import set_lookup
        import dataclasses
        from _common import mini_step_inputs
        m, cfg, tok = mini_step_inputs("shipped" if "trained" in name else "random", device)
        rc = dataclasses.replace(preset_config("mini").render, height=64, width=64, n_samples=32, n_importance=32)  # the mini preset's renderer
        if name.endswith("_before"):  # the renderer and lookup before the numba kernel and surface normals
            set_lookup("grid_sample"); rc = dataclasses.replace(rc, normals_at="samples")
        cams = sample_cameras(cfg.camera, 8, generator=torch.Generator().manual_seed(0)).to(device)
        def fn():
            m.zero_grad(set_to_none=True)
            with ac: out = m(tok, cams, generator=torch.Generator().manual_seed(0), cfg=rc, shading="lambertian")
            out["rgb"].float().mean().backward()
        return timed(fn, device, repeats)
    raise ValueError(name)

CASES = [("forward_mini", 10), ("forward_official", 3), ("render_64", 5), ("render_256", 2), ("train_step_mini", 7), ("train_step_mini_trained", 7),
         ("train_step_mini_before", 5), ("train_step_mini_trained_before", 5)]

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtypes", default="fp32", help="comma list: fp32,bf16")
    ap.add_argument("--quick", action="store_true", help="one repeat each")
    ap.add_argument("--out", default=None)
    ap.add_argument("--case", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--dtype", default="fp32", help=argparse.SUPPRESS)
    ap.add_argument("--repeats", type=int, default=1, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.case:  # child process
        print(json.dumps(case(a.case, a.device, a.dtype, a.repeats))); return
    import torch
    results = {"device": a.device, "torch": torch.__version__, "threads": torch.get_num_threads(),
               "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "gpu": torch.cuda.get_device_name() if a.device == "cuda" else None, "cases": {}}
    for dtype in a.dtypes.split(","):
        for name, reps in CASES:
            reps = 1 if a.quick else reps
            r = subprocess.run([sys.executable, __file__, "--case", name, "--device", a.device, "--dtype", dtype, "--repeats", str(reps)],
                               capture_output=True, text=True)
            if r.returncode != 0: print(r.stderr[-2000:]); raise SystemExit(f"case {name} failed")
            res = json.loads(r.stdout.strip().splitlines()[-1])
            results["cases"][f"{name}/{dtype}"] = res
            print(f"{name:18s} {dtype:5s} median {res['median_s']*1000:9.1f} ms   min {res['min_s']*1000:9.1f} ms   peak +{res['peak_mem_mb']:.0f} MB")
    out = Path(a.out or ROOT / "benchmarks" / "results" / f"generator_{a.device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, json.dumps(results, indent=1))
    print(f"wrote {out.relative_to(ROOT)}")
    if not a.quick: update_benchmarks_md(results, " ".join(["python benchmarks/bench_generator.py"] + sys.argv[1:]))

LABELS = {"forward_mini": "generator forward, mini, batch 1 (triplane)",
          "forward_official": "generator forward, official, batch 1 (triplane 3x32x256x256)",
          "render_64": "render one 64x64 view, 64+64 samples (official field)",
          "render_256": "render one 256x256 view, 64+64 samples (official field)",
          "train_step_mini": "mini forward+backward, batch 8, 64x64, 32+32 samples, Lambertian",
          "train_step_mini_trained": "the same with the shipped mini model and 8 training prompts",
          "train_step_mini_before": "random weights, before: `grid_sample` lookup, a normal per sample",
          "train_step_mini_trained_before": "shipped model, before: `grid_sample` lookup, a normal per sample"}

def update_benchmarks_md(results, command):
    "Rewrite this device's section of BENCHMARKS.md between its markers (atomically)."
    dev = results["device"]
    rows = ["| measurement | dtype | median | min | peak memory |", "|---|---|---|---|---|"]
    for key, r in results["cases"].items():
        name, dtype = key.split("/")
        rows.append(f"| {LABELS[name]} | {dtype} | {r['median_s']*1000:,.1f} ms | {r['min_s']*1000:,.1f} ms | +{r['peak_mem_mb']:,.0f} MB |")
    hw = results["gpu"] or f"{results['cores']}-core CPU, torch {results['torch']}, {results['threads']} threads"
    block = "\n".join([f"<!-- generator:{dev} start -->", f"Command: `{command}`  ", f"Hardware: {hw}", "", *rows,
                        f"<!-- generator:{dev} end -->"])
    md = ROOT / "BENCHMARKS.md"
    text = md.read_text() if md.exists() else "# Benchmarks\n"
    start, end = f"<!-- generator:{dev} start -->", f"<!-- generator:{dev} end -->"
    if start in text: text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else: text = text.rstrip() + "\n\n" + block + "\n"
    write_atomic(md, text)
    print(f"updated BENCHMARKS.md ({dev})")

if __name__ == "__main__": main()
