"""Where the mini training step spends its time, and how three bilinear lookups compare on this CPU.

Run: `python benchmarks/profile_mini_step.py` (one torch thread). Prints the profile tables and writes
benchmarks/results/profile_mini_step.json: the share of self CPU time of the top operators in one mini forward+backward
(batch 8, 64x64, 32+32 samples, Lambertian, random mini generator, the mini preset's renderer) with the `grid_sample` lookup and with
the numba lookup, and forward/backward times of `grid_sample`, of the numba `atlas_lookup` and of a 4-corner gather at 150,000
points on a mini-sized atlas.

`python benchmarks/profile_mini_step.py --shading` (torch's default threads) instead times the step with albedo shading, with
Lambertian shading and one normal per sample, and with Lambertian shading and one normal per ray (`normals_at="surface"`, the mini
preset), for random weights and for the shipped mini model, alternating, 5 rounds, and writes benchmarks/results/shading_cost.json.
"""
import dataclasses, json, time
from pathlib import Path
import torch
import torch.nn.functional as F

def profile_step(lookup: str) -> dict:
    from instant3d.generator import Instant3D, preset_config
    from instant3d.cameras import sample_cameras
    from instant3d.field import set_lookup
    set_lookup(lookup)
    cfg = preset_config("mini")
    rc = dataclasses.replace(cfg.render, height=64, width=64, n_samples=32, n_importance=32)
    torch.manual_seed(0)
    tok = torch.randn(8, cfg.token_to_plane.n_tokens, cfg.token_to_plane.token_dim)
    cams = sample_cameras(cfg.camera, 8, generator=torch.Generator().manual_seed(0))
    m = Instant3D(cfg)
    def step():
        m.zero_grad(set_to_none=True)
        m(tok, cams, generator=torch.Generator().manual_seed(0), cfg=rc, shading="lambertian")["rgb"].mean().backward()
    step()  # warm-up (and the numba compile)
    with torch.profiler.profile() as p: step()
    ev = sorted(p.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ev)
    print(f"lookup {lookup}:"); print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))
    return dict(self_cpu_ms=round(total / 1e3, 1), top_percent={e.key: round(100 * e.self_cpu_time_total / total, 1) for e in ev[:8]})

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
    from instant3d.field import atlas_lookup
    hwc = atlas[0].permute(1, 2, 0)  # the same atlas, channels last (a view: gradients reach `atlas`)
    def numba(): return atlas_lookup(hwc, grid[0]).permute(2, 1, 0)[None]  # [M, 3, C] -> grid_sample's [1, C, 3, M]
    torch.testing.assert_close(gs(), gather(), rtol=1e-3, atol=1e-3)  # the same lookup
    torch.testing.assert_close(gs(), numba(), rtol=1e-3, atol=1e-3)
    res = {}
    for name, fn in (("grid_sample", gs), ("numba", numba), ("gather", gather)):
        f, b = [], []
        for _ in range(repeats):
            atlas.grad = None
            t0 = time.perf_counter(); o = fn(); t1 = time.perf_counter(); o.sum().backward(); t2 = time.perf_counter()
            f.append(t1 - t0); b.append(t2 - t1)
        res[name] = dict(forward_ms=round(1e3 * min(f), 1), backward_ms=round(1e3 * min(b), 1))
    return res

def shading_cost(rounds: int = 5) -> dict:
    "Median seconds of one mini forward+backward (batch 8, 64x64, 32+32): albedo, Lambertian with per-sample and with per-ray normals."
    from instant3d.cameras import sample_cameras
    from instant3d.generator import preset_config
    from _common import mini_step_inputs
    rc = dataclasses.replace(preset_config("mini").render, height=64, width=64, n_samples=32, n_importance=32)
    variants = {"albedo": ("albedo", "surface"), "lambertian_per_sample": ("lambertian", "samples"), "lambertian_per_ray": ("lambertian", "surface")}
    out = {}
    for name in ("random", "shipped"):
        m, cfg, tok = mini_step_inputs(name)
        cams = sample_cameras(cfg.camera, 8, generator=torch.Generator().manual_seed(0))
        def step(shading, at):
            m.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            m(tok, cams, generator=torch.Generator().manual_seed(0), cfg=dataclasses.replace(rc, normals_at=at), shading=shading)["rgb"].mean().backward()
            return time.perf_counter() - t0
        for v in variants.values(): step(*v)  # warm-up
        ts = {k: [] for k in variants}
        for _ in range(rounds):
            for k, v in variants.items(): ts[k].append(step(*v))
        out[name] = {f"{k}_s": round(sorted(v)[len(v) // 2], 3) for k, v in ts.items()}
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
    out = dict(threads=1, step_grid_sample=profile_step("grid_sample"), step_numba=profile_step("numba"), lookup_150k_points=gather_vs_grid_sample())
    print(json.dumps(out, indent=1))
    path = Path(__file__).parent / "results" / "profile_mini_step.json"
    tmp = path.with_suffix(".json.tmp"); tmp.write_text(json.dumps(out, indent=1)); tmp.replace(path)
