"""Scaled dot-product attention on this CPU: forward + backward of the mini networks' shapes with torch's flash kernel and
the math kernel, in float32 and bf16. This is why `instant3d.precision.attention_backend("auto")` picks the math kernel
where gradients flow through bf16 attention on a CPU (nbs/00b_precision.ipynb).

Run: `python benchmarks/bench_attention.py` (1 thread by default). Prints a table with the CPU model and its bf16 capability
and writes benchmarks/results/attention_cpu.json; it does not touch BENCHMARKS.md.
"""
import argparse, json, statistics, time
from _common import ROOT, write_atomic

SHAPES = {  # [batch, heads, tokens, head dim] of q = k = v
    "mini CLIP image tower (CLIP loss, batch 8)": (8, 4, 65, 24),
    "mini CLIP image tower (its training, batch 64)": (64, 4, 65, 24),
    "mini teacher self-attention 8x8 (its training, batch 64)": (64, 4, 64, 24),
}


def time_one(shape, backend, dtype, repeats: int) -> float:
    "Median milliseconds of one forward + backward."
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import sdpa_kernel
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(*shape, generator=g).to(dtype).requires_grad_() for _ in range(3))
    ts = []
    for i in range(repeats + 3):
        t0 = time.perf_counter()
        with sdpa_kernel([backend]): o = F.scaled_dot_product_attention(q, k, v)
        o.float().square().mean().backward()
        if i >= 3: ts.append(time.perf_counter() - t0)
    return round(1000 * statistics.median(ts), 3)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "attention_cpu.json"))
    a = ap.parse_args()
    import torch
    from torch.nn.attention import SDPBackend
    torch.set_num_threads(a.threads)
    from instant3d.precision import hardware_line
    hw = hardware_line()
    print("hardware:", hw)
    rows = []
    for name, shape in SHAPES.items():
        for dt in (torch.float32, torch.bfloat16):
            r = dict(shape=name, dims=list(shape), dtype=str(dt).split(".")[-1])
            for label, b in (("flash_ms", SDPBackend.FLASH_ATTENTION), ("math_ms", SDPBackend.MATH)):
                r[label] = time_one(shape, b, dt, a.repeats)
            rows.append(r)
            print(f"{name:58s} {r['dtype']:9s} flash {r['flash_ms']:8.2f} ms  math {r['math_ms']:8.2f} ms  "
                  f"(forward + backward, median of {a.repeats})")
    write_atomic(a.out, json.dumps(dict(hardware=hw, threads=a.threads, repeats=a.repeats, rows=rows), indent=1))


if __name__ == "__main__": main()
