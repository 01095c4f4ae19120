"""Training throughput of one process against two sharing the CPU: the basis of running `instant3d reproduce` twice.

    python benchmarks/bench_parallel.py [--steps 30] [--out benchmarks/results/parallel_cpu.json]

Each case runs mini training steps (the `mini` preset: batch 8, 32x32, adaptive Perp-Neg, CLIP loss, the shipped teacher)
in fresh processes started together, 3 warm-up steps each, then `--steps` timed steps:
  - one process with as many torch threads as cores;
  - one process per core with one thread each (`OMP_NUM_THREADS=1`), the way `instant3d reproduce` is run in parallel.
Throughput = the sum over processes of timed steps / timed seconds. Writes the JSON and the parallel section of BENCHMARKS.md.
"""
import argparse, json, os, platform, subprocess, sys
from _common import ROOT, write_atomic, replace_section

START, END = "<!-- parallel:cpu start -->", "<!-- parallel:cpu end -->"
WORKER = r'''
import json, sys, tempfile, time, torch
from dataclasses import replace
from instant3d.train_config import train_preset
from instant3d.train import Trainer
cfg = replace(train_preset("mini"), checkpoint_every=0, preview_every=0, eval_every=0)
with tempfile.TemporaryDirectory() as d:
    t = Trainer(cfg, d)
    for _ in range(3): t.train_step()
    t0 = time.perf_counter()
    for _ in range(int(sys.argv[1])): t.train_step()
    print(json.dumps(dict(steps=int(sys.argv[1]), seconds=time.perf_counter() - t0, threads=torch.get_num_threads())))
'''

def run_case(processes: int, threads: int, steps: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1")
    ps = [subprocess.Popen([sys.executable, "-c", WORKER, str(steps)], stdout=subprocess.PIPE, text=True, env=env) for _ in range(processes)]
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in ps]
    if any(p.returncode for p in ps): raise SystemExit("a worker failed")
    rate = sum(o["steps"] / o["seconds"] for o in outs)
    return dict(processes=processes, threads=threads, steps_per_s=round(rate, 3), per_process=[round(o["steps"] / o["seconds"], 3) for o in outs])

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "parallel_cpu.json"))
    a = ap.parse_args()
    cores = os.cpu_count()
    one = run_case(1, cores, a.steps)
    many = run_case(cores, 1, a.steps)
    import torch
    res = dict(one_process=one, one_per_core=many, ratio=round(many["steps_per_s"] / one["steps_per_s"], 2), cores=cores,
               hardware=f"{platform.processor() or platform.machine()}, {cores} cores, torch {torch.__version__}, python {platform.python_version()}")
    print(json.dumps(res, indent=1))
    write_atomic(a.out, json.dumps(res, indent=1) + "\n")
    block = "\n".join([START, "Command: `python benchmarks/bench_parallel.py`  ", f"Hardware: {res['hardware']}", "",
        "| mini training steps (batch 8, 32x32) | steps/s, all processes | per process |", "|---|---|---|",
        f"| 1 process, {cores} threads | {one['steps_per_s']:.2f} | {one['per_process'][0]:.2f} |",
        f"| {cores} processes, 1 thread each | {many['steps_per_s']:.2f} | {', '.join(f'{x:.2f}' for x in many['per_process'])} |", "",
        f"Ratio: **{res['ratio']:.2f}x** the throughput with one single-threaded process per core: how `instant3d reproduce` is best run here "
        "(start it once per core with `OMP_NUM_THREADS=1`; the processes share the plan's runs).", END])
    replace_section(block, START, END, "## Running the reproduction in parallel")

if __name__ == "__main__": main()
