"""Where the mini training step spends its time, and whether a gather-based bilinear lookup would beat `grid_sample` on this CPU.

`python benchmarks/profile_mini_step.py --shading` (torch's default threads) instead times the step with albedo against Lambertian
shading (what the normals cost) for random weights and for the shipped mini model, alternating, 3 rounds, and writes
benchmarks/results/shading_cost.json.

Run: `python benchmarks/profile_mini_step.py` (one torch thread). Prints the profile table and writes
benchmarks/results/profile_mini_step.json: the share of self CPU time of the top operators in one mini forward+backward
(batch 8, 64x64, 32+32 samples, Lambertian, random mini generator), and forward/backward times of `grid_sample` and of a
4-corner gather at 150,000 points on a mini-sized atlas.
"""
import dataclasses, json, time
from pathlib import Path
import torch
import torch.nn.functional as F

def profile_step() -> dict:
    from instant3d.generator import Instant3D, preset_config
    from instant3d.cameras import sample_cameras
    cfg = preset_config("mini")
    rc = dataclasses.replace(cfg.render, height=64, width=64, n_samples=32, n_importance=32)
    tok = torch.randn(8, cfg.token_to_plane.n_tokens, cfg.token_to_plane.token_dim)
    cams = sample_cameras(cfg.camera, 8, generator=torch.Generator().manual_seed(0))
    m = Instant3D(cfg)
    def step():
        m.zero_grad(set_to_none=True)
        m(tok, cams, generator=torch.Generator().manual_seed(0), cfg=rc, shading="lambertian")["rgb"].mean().backward()
    step()  # warm-up
    with torch.profiler.profile() as p: step()
    ev = sorted(p.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ev)
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))
    return {e.key: round(100 * e.self_cpu_time_total / total, 1) for e in ev[:8]}

def gather_vs_grid_sample(M: int = 150_000, C: int = 16, B: int = 8, H: int = 32, repeats: int = 3) -> dict:
    Ha, Wa = B * 3 * (H + 2), H + 2
    atlas = torch.randn(1, C, Ha, Wa, requires_grad=True)
    grid = torch.rand(1, 3, M, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1
    def gs(): return F.grid_sample(atlas, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    def gather():
        x, y = ((grid[..., 0] + 1) * Wa - 1) / 2, ((grid[..., 1] + 1) * Ha - 1) / 2
        x0, y0 = x.floor(), y.floor(); fx, fy = x - x0, y - y0; x0, y0 = x0.long(), y0.long()
        flat, out = atlas[0].permute(1, 2, 0).reshape(Ha * Wa, C), 0
        for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            xi, yi = x0 + dx, y0 + dy
            ok = (xi >= 0) & (xi < Wa) & (yi >= 0) & (yi < Ha)
            out = out + flat.index_select(0, (yi.clamp(0, Ha - 1) * Wa + xi.clamp(0, Wa - 1)).reshape(-1)) * (w * ok).reshape(-1, 1)
        return out.view(1, 3, M, C).permute(0, 3, 1, 2)
    torch.testing.assert_close(gs(), gather(), rtol=1e-3, atol=1e-3)  # the same lookup
    res = {}
    for name, fn in (("grid_sample", gs), ("gather", gather)):
        f, b = [], []
        for _ in range(repeats):
            atlas.grad = None
            t0 = time.perf_counter(); o = fn(); t1 = time.perf_counter(); o.sum().backward(); t2 = time.perf_counter()
            f.append(t1 - t0); b.append(t2 - t1)
        res[name] = dict(forward_ms=round(1e3 * min(f), 1), backward_ms=round(1e3 * min(b), 1))
    return res

def shading_cost(rounds: int = 3) -> dict:
    "Median seconds of one mini forward+backward (batch 8, 64x64, 32+32) with albedo and with Lambertian shading, alternating."
    from instant3d.cameras import sample_cameras
    from _common import mini_step_inputs
    out = {}
    for name in ("random", "shipped"):
        m, cfg, tok = mini_step_inputs(name)
        rc = dataclasses.replace(cfg.render, height=64, width=64, n_samples=32, n_importance=32)
        cams = sample_cameras(cfg.camera, 8, generator=torch.Generator().manual_seed(0))
        def step(shading):
            m.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            m(tok, cams, generator=torch.Generator().manual_seed(0), cfg=rc, shading=shading)["rgb"].mean().backward()
            return time.perf_counter() - t0
        step("lambertian")  # warm-up
        ts = {"albedo": [], "lambertian": []}
        for _ in range(rounds):
            for k in ts: ts[k].append(step(k))
        med = {k: sorted(v)[len(v) // 2] for k, v in ts.items()}
        out[name] = dict(albedo_s=round(med["albedo"], 3), lambertian_s=round(med["lambertian"], 3),
                         normals_share=round(1 - med["albedo"] / med["lambertian"], 3))
        print(name, out[name], flush=True)
    return out

if __name__ == "__main__":
    import sys
    if "--shading" in sys.argv:
        threads = torch.get_num_threads()
        out = dict(threads=threads, shading_cost=shading_cost())
        path = Path(__file__).parent / "results" / "shading_cost.json"
        tmp = path.with_suffix(".json.tmp"); tmp.write_text(json.dumps(out, indent=1)); tmp.replace(path)
        sys.exit(0)
    torch.set_num_threads(1)
    out = dict(threads=1, step_self_cpu_percent=profile_step(), lookup_150k_points=gather_vs_grid_sample())
    print(json.dumps(out, indent=1))
    path = Path(__file__).parent / "results" / "profile_mini_step.json"
    tmp = path.with_suffix(".json.tmp"); tmp.write_text(json.dumps(out, indent=1)); tmp.replace(path)
