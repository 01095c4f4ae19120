"""Where one mini training step spends its time, phase by phase, with every speed lever at its default.

Run: `python benchmarks/step_phases.py [--threads 1] [--steps 10] [--set KEY=VALUE ...]`. One process builds the `mini`
training preset's trainer with the shipped mini model as its warm start (the `trained` state of bench_speed.py), fills its
prompt caches, runs 4 warm-up steps and times `--steps` steps, wrapping the step's parts in wall-clock timers:
  - `render`: the generator's forward and the volume rendering of the 8 views (`Trainer._render_batch`), and inside it
    `render: coarse pass without gradients` (empty-space skipping's pass over every coarse sample);
  - `clip forward`: the mini CLIP's image tower on the renders (CLIP loss and adaptive Perp-Neg);
  - `teacher (SDS)`: the frozen teacher's UNet rows and the SDS gradient (no backward through the UNet);
  - `backward`: the backward pass of the losses (renderer, generator, CLIP image tower);
  - `optimiser`: Adam's step and the EMA update.
Prints the medians per step with the CPU model, and writes `--out` (default benchmarks/results/step_phases.json).
"""
import argparse, json, statistics, tempfile, time
from dataclasses import replace
from pathlib import Path
from _common import ROOT, write_atomic


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--set", nargs="*", default=[], help="config overrides, as `instant3d train --set`")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "step_phases.json"))
    a = ap.parse_args()
    import torch
    torch.set_num_threads(a.threads)
    import instant3d.render as R
    from instant3d.precision import hardware_line
    from instant3d.train import Trainer
    from instant3d.train_config import train_preset, apply_overrides
    hw = hardware_line()
    print("hardware:", hw, flush=True)
    cfg = replace(train_preset("mini"), checkpoint_every=0, preview_every=0, eval_every=0)
    cfg = replace(apply_overrides(cfg, a.set), init_from=str(ROOT / "instant3d" / "weights" / "mini"), alpha_start=1.0)
    acc = {}

    def timed(name, fn, when=lambda *a, **k: True):
        def wrapper(*args, **kwargs):
            if not when(*args, **kwargs): return fn(*args, **kwargs)
            t0 = time.perf_counter()
            try: return fn(*args, **kwargs)
            finally: acc[name] = acc.get(name, 0.0) + time.perf_counter() - t0
        return wrapper

    with tempfile.TemporaryDirectory() as d:
        t = Trainer(cfg, d)
        every = torch.arange(len(t.prompts))
        t.bank.tokens(every); t.bank.view_embeds(every)
        if t.bank.clip is not None: t.bank.clip_text(every)
        t._render_batch = timed("render", t._render_batch)
        # the coarse pass without gradients: _evaluate called while gradients are off, from a step that has them on
        R._evaluate = timed("render: coarse pass without gradients", R._evaluate,
                            when=lambda *args, **kw: not torch.is_grad_enabled())
        if t.clip is not None: t.clip.encode_images = timed("clip forward", t.clip.encode_images)
        t.guidance.sds = timed("teacher (SDS)", t.guidance.sds)
        t.opt.step = timed("optimiser", t.opt.step)
        t._update_ema = timed("optimiser", t._update_ema)
        backward = torch.Tensor.backward
        torch.Tensor.backward = timed("backward", backward)
        try:
            for _ in range(4): t.train_step()
            per_step, totals = {}, []
            for _ in range(a.steps):
                acc.clear()
                t0 = time.perf_counter(); t.train_step(); totals.append(time.perf_counter() - t0)
                for k, v in acc.items(): per_step.setdefault(k, []).append(v)
        finally: torch.Tensor.backward = backward
    step = statistics.median(totals)
    phases = {k: round(1000 * statistics.median(v), 1) for k, v in per_step.items()}
    named = sum(v for k, v in phases.items() if not k.startswith("render:"))
    phases["other (sampling, Perp-Neg weights, losses, bookkeeping)"] = round(1000 * step - named, 1)
    for k, v in phases.items(): print(f"{k:58s} {v:7.1f} ms  {100 * v / (1000 * step):5.1f} %")
    print(f"{'step':58s} {1000 * step:7.1f} ms")
    write_atomic(a.out, json.dumps(dict(hardware=hw, threads=a.threads, steps=a.steps, overrides=a.set,
                                        step_ms=round(1000 * step, 1), phases_ms=phases), indent=1))


if __name__ == "__main__": main()
