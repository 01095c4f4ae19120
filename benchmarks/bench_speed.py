"""The mini training step, lever by lever, against the code of an earlier commit: views per second, side by side.

    python benchmarks/bench_speed.py [--base bc834c8] [--steps 12] [--rounds 2] [--threads 2]
                                     [--out benchmarks/results/speed_cpu.json] [--no-markdown] [--tiny]

Every measurement is a fresh process that builds the `mini` training preset's trainer (batch 8, 32x32 renders, 32+32
samples, adaptive Perp-Neg, CLIP loss, the shipped teacher), fills its prompt caches (every prompt's embeddings: the
steady state of a run, where no text is encoded any more), runs 3 warm-up steps and times `--steps` steps; the figure is
the median step. Variants, in an order repeated `--rounds` times (so that a drift of the machine's speed hits all):
  - `base`: the code of commit `--base` (a git worktree of it in a temporary folder, its own shipped weights);
  - `off`: this code with every lever off; `+empty_skip`, `+channels_last`, `+skip_unused`, `+bf16`: one lever on;
  - `on`: this code with its defaults (every lever on; bf16 only where the CPU computes it natively);
  - `-attention_math` (native bf16 only): the defaults with torch's attention kernel in the bf16 CLIP loss
    (`clip.attention=default`) instead of the math kernel (instant3d.precision.attention_backend);
  - the mini teacher's own training step (batch 64), plain against channels-last (and bf16 autocast where native, with
    torch's attention kernel, `+flash`, and with the math kernel that `auto` picks).
Two model states: `fresh` (random init: a run's first steps, density almost everywhere) and `trained` (the shipped mini
model as the warm start: what most of a run's steps see). Single levers are timed on `trained` only.
It also measures what the levers change: the SDS gradient of a bf16 teacher against float32 on identical noise and
timesteps (cosine, relative norm; emulated where the CPU has no native bf16, so only the numbers count there, not the
time), and the shipped model's test renders with empty-space skipping against without (max |difference|, PSNR).
Writes the JSON and the speed section of BENCHMARKS.md. `--tiny`: one round, 2 steps, no base (a smoke run).
"""
import argparse, contextlib, json, os, statistics, subprocess, sys, tempfile, time
from pathlib import Path
from _common import ROOT, write_atomic, replace_section

def markers(section: str = "cpu") -> tuple[str, str]:
    "Start and end markers of this benchmark's section of BENCHMARKS.md (one section per kind of CPU, e.g. 'cpu-bf16')."
    return f"<!-- speed:{section} start -->", f"<!-- speed:{section} end -->"


def levers() -> dict:
    "--set items of each variant of this code (imported here, not at the top: the base commit's children lack it)."
    from instant3d.train_config import SPEED_LEVERS_OFF
    return {"off": list(SPEED_LEVERS_OFF), "on": []}
SINGLE = {"+empty_skip": "generator.render.empty_density=0.001", "+channels_last": "sds.channels_last=true",
          "+skip_unused": "sds.skip_unused=true", "+bf16": "sds.dtype=bfloat16"}
# the defaults with one lever switched off (rows "-lever": compare with "on")
MINUS = {"-attention_math": "clip.attention=default"}
SHIPPED = "instant3d/weights/mini"  # relative to the code's root (each commit has its own copy)


def child(a):
    "One measurement in this process: print one JSON line."
    import torch
    torch.set_num_threads(a.threads)
    from dataclasses import replace
    try: from instant3d.train_config import train_preset, apply_overrides
    except ImportError: from instant3d.train import train_preset, apply_overrides  # older commits
    from instant3d.train import Trainer
    cfg = replace(train_preset("mini"), checkpoint_every=0, preview_every=0, eval_every=0)
    cfg = apply_overrides(cfg, json.loads(a.sets))
    if a.state == "trained": cfg = replace(cfg, init_from=str(Path.cwd() / SHIPPED), alpha_start=1.0)
    with tempfile.TemporaryDirectory() as d:
        t = Trainer(cfg, d)
        every = torch.arange(len(t.prompts))
        t.bank.tokens(every); t.bank.view_embeds(every)
        if t.bank.clip is not None: t.bank.clip_text(every)
        t0 = time.perf_counter()
        for _ in range(a.warmup): t.train_step()
        warm = time.perf_counter() - t0
        ts = []
        for _ in range(a.steps):
            t0 = time.perf_counter(); t.train_step(); ts.append(time.perf_counter() - t0)
    print("RESULT " + json.dumps(dict(median_s=statistics.median(ts), min_s=min(ts), warmup_s=warm,
                                      batch=cfg.batch_size)), flush=True)


def teacher_child(a):
    "The mini teacher's own training step (batch 64, 32x32): UNet forward + backward + AdamW; print one JSON line."
    import torch
    torch.set_num_threads(a.threads)
    from instant3d.mini.teacher import TeacherConfig, build_unet, build_scheduler, diffusion_loss
    cl, bf16 = a.state.startswith("channels_last"), "bf16" in a.state
    # "+flash": bf16 with torch's attention kernel (the attention lever off); else instant3d.precision's "auto"
    try: from instant3d.precision import attention_backend
    except ImportError: attention_backend = None
    tc = TeacherConfig.mini(); torch.manual_seed(0)
    unet, sch = build_unet(tc), build_scheduler(tc)
    fmt = torch.channels_last if cl else torch.contiguous_format
    unet.to(memory_format=fmt).train()
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(tc.batch_size, 3, tc.sample_size, tc.sample_size, generator=g) * 2 - 1).contiguous(memory_format=fmt)
    tok = torch.randn(tc.batch_size, 24, tc.cross_attention_dim, generator=g)
    ts = []
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        kernel = (attention_backend("default" if a.state.endswith("+flash") else "auto", "cpu", bf16)
                  if attention_backend else contextlib.nullcontext())
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16), kernel:
            loss = diffusion_loss(unet, sch, x, tok, g).float()
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
        if i >= a.warmup: ts.append(time.perf_counter() - t0)
    print("RESULT " + json.dumps(dict(median_s=statistics.median(ts), min_s=min(ts), batch=tc.batch_size)), flush=True)


def run_child(code_root: Path, state: str, sets: list, a) -> dict:
    env = dict(os.environ, PYTHONPATH=str(code_root), OMP_NUM_THREADS=str(a.threads), HF_HUB_OFFLINE="1",
               INSTANT3D_BF16=os.environ.get("INSTANT3D_BF16", "auto"))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child-teacher" if sets is None else "--child", "--state", state, "--sets", json.dumps(sets or []),
           "--steps", str(a.steps), "--threads", str(a.threads), "--warmup", str(a.warmup)]
    p = subprocess.run(cmd, cwd=code_root, env=env, capture_output=True, text=True)
    line = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
    if p.returncode != 0 or not line:
        raise SystemExit(f"bench_speed: the {state} run with {sets} in {code_root} failed:\n{p.stderr[-3000:]}")
    return json.loads(line[0][7:])


def bf16_gradient(threads: int) -> dict:
    "SDS gradient of the shipped teacher in bf16 against float32: same renders, noise, timesteps and conditions."
    import torch
    from dataclasses import replace
    from instant3d.sds import SDSGuidance, SDSConfig
    from instant3d.precision import native_bf16
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(8, 3, 32, 32, generator=g)
    out = {}
    for name in ("float32", "bfloat16"):
        sg = SDSGuidance.from_pretrained(replace(SDSConfig.mini(), dtype=name))
        emb = sg.encode_prompts(["a red cube wearing a blue cone hat, front view"])[:, None].expand(8, 1, -1, -1)
        t0 = time.perf_counter()
        r = sg.sds(imgs, emb, generator=torch.Generator().manual_seed(1))
        out[name] = (r["grad"].double(), r["t"], time.perf_counter() - t0)
    a, b = out["bfloat16"][0].flatten(), out["float32"][0].flatten()
    assert torch.equal(out["bfloat16"][1], out["float32"][1])  # the same timesteps
    return dict(cosine=round(torch.nn.functional.cosine_similarity(a, b, 0).item(), 5),
                relative_norm=round((a.norm() / b.norm()).item(), 5),
                relative_error=round(((a - b).norm() / b.norm()).item(), 5),
                native_bf16=native_bf16("cpu"), sds_s_float32=round(out["float32"][2], 3),
                sds_s_bfloat16=round(out["bfloat16"][2], 3))


def render_difference() -> dict:
    "The shipped model's test renders (4 views, 8 test prompts) with empty-space skipping against without."
    import torch, dataclasses, math
    from instant3d.generator import Instant3DPipeline
    from instant3d.cameras import four_views
    from instant3d.mini.world import prompts as world_prompts
    pipe = Instant3DPipeline.from_pretrained(ROOT / SHIPPED)
    m, cfg = pipe.model.float().eval(), pipe.config
    tok = pipe.text_encoder.encode(world_prompts(None, "test")[:8]).tokens.float()
    cams = four_views(cfg.camera)
    imgs = {}
    with torch.no_grad():
        tp = m.triplane(tok, noise=torch.randn(8, cfg.style.noise_dim, generator=torch.Generator().manual_seed(0)))
        for tau in (0.0, 1e-3):
            rc = dataclasses.replace(cfg.render.for_test(), empty_density=tau)
            imgs[tau] = torch.stack([m.render(tp[[i] * 4], cams, cfg=rc, perturb=False, shading="albedo")["rgb"]
                                     for i in range(8)])
    d = imgs[1e-3] - imgs[0.0]
    mse = d.square().mean().item()
    return dict(views=32, size=list(imgs[0.0].shape[-2:]), max_abs=float(d.abs().max()),
                psnr_db=round(10 * math.log10(1 / mse), 1) if mse > 0 else float("inf"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="bc834c8", help="commit whose step is the baseline ('' = none)")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "speed_cpu.json"))
    ap.add_argument("--no-markdown", action="store_true")
    ap.add_argument("--section", default="cpu", help="BENCHMARKS.md section to write ('cpu'; e.g. 'cpu-bf16' for a CPU with "
                    "native bf16, so that each kind of CPU keeps its own figures)")
    ap.add_argument("--compile", action="store_true", help="also time the defaults with sds.compile=true (trained "
                    "state; the warm-up includes the compile, reported as warmup_s)")
    ap.add_argument("--tiny", action="store_true", help="smoke run: 1 round, 2 steps, 1 warm-up, no base, no extras")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child-teacher", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--state", default="fresh", help=argparse.SUPPRESS)
    ap.add_argument("--sets", default="[]", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child: return child(a)
    if a.child_teacher: return teacher_child(a)
    if a.tiny: a.rounds, a.steps, a.warmup, a.base = 1, 2, 1, ""
    import torch
    torch.set_num_threads(a.threads)
    from instant3d.precision import hardware_line, native_bf16
    hw = hardware_line()
    print("hardware:", hw, flush=True)
    plan = [("fresh", "off"), ("fresh", "on"), ("trained", "off"), ("trained", "on")]
    if not a.tiny:
        plan += [("trained", k) for k in SINGLE if k != "+bf16" or native_bf16("cpu")]
        plan += [("teacher_training", k) for k in ("plain", "channels_last")]
        if native_bf16("cpu"):
            plan += [("teacher_training", "channels_last+bf16+flash"), ("teacher_training", "channels_last+bf16")]
            plan.append(("trained", "-attention_math"))
    if a.compile: plan.append(("trained", "+compile"))
    with tempfile.TemporaryDirectory() as tmp:
        base_root = None
        if a.base:
            base_root = Path(tmp) / "base"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base_root), a.base], check=True,
                           capture_output=True)
            plan = [("fresh", "base"), ("trained", "base")] + plan
        try:
            times, warm = {}, {}
            from tqdm.auto import tqdm
            with tqdm(total=a.rounds * len(plan), desc="bench_speed") as bar:
                for r in range(a.rounds):
                    for state, v in plan:
                        root = base_root if v == "base" else ROOT
                        if state == "teacher_training": res = run_child(ROOT, v, None, a)
                        else:
                            sets = ([] if v == "base" else levers()["off"] + [SINGLE[v]] if v in SINGLE
                                    else [MINUS[v]] if v in MINUS
                                    else ["sds.compile=true"] if v == "+compile" else levers()[v])
                            res = run_child(root, state, sets, a)
                            warm.setdefault(f"{state}/{v}", []).append(res.get("warmup_s"))
                        times.setdefault(f"{state}/{v}", []).append(res["median_s"])
                        bar.set_postfix_str(f"{state}/{v} {1000 * res['median_s']:.0f} ms"); bar.update(1)
        finally:
            if base_root is not None:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_root)],
                               capture_output=True)
    rows = {k: dict(step_ms=round(1000 * statistics.median(v), 1),
                    views_per_s=round((64 if k.startswith("teacher") else 8) / statistics.median(v), 2),
                    per_round_ms=[round(1000 * x, 1) for x in v],
                    warmup_s=[None if w is None else round(w, 1) for w in warm.get(k, [])]) for k, v in times.items()}
    res = dict(hardware=hw, native_bf16=native_bf16("cpu"), base=a.base, threads=a.threads, steps=a.steps,
               rounds=a.rounds, rows=rows)
    if not a.tiny:
        res["bf16_sds_gradient"] = bf16_gradient(a.threads); print(json.dumps(res["bf16_sds_gradient"]), flush=True)
        res["empty_skip_renders"] = render_difference(); print(json.dumps(res["empty_skip_renders"]), flush=True)
    for k, v in rows.items(): print(f"{k:24s} {v['step_ms']:8.1f} ms  {v['views_per_s']:6.2f} views/s  {v['per_round_ms']}")
    write_atomic(a.out, json.dumps(res, indent=1))
    if not a.no_markdown and not a.tiny: write_markdown(res, a.section, " ".join(sys.argv[1:]))


def write_markdown(res: dict, section: str = "cpu", args: str = ""):
    rows = res["rows"]
    def ratio(k, ref):
        return f"{rows[ref]['step_ms'] / rows[k]['step_ms']:.2f}x" if k in rows and ref in rows else ""
    START, END = markers(section)
    lines = [START, f"Command: `python benchmarks/bench_speed.py{' ' + args if args else ''}`  ",
             f"Hardware: {res['hardware']}  ",
             f"Baseline: commit {res['base'] or '(none)'}; medians of {res['steps']} steps per fresh process, "
             f"{res['rounds']} rounds, {res['threads']} threads", "",
             "| model state | variant | step | views/s | vs base | vs all levers off |", "|---|---|---|---|---|---|"]
    for k, v in rows.items():
        if k.startswith("teacher_training"): continue
        state, var = k.split("/")
        lines.append(f"| {state} | {var} | {v['step_ms']:.0f} ms | {v['views_per_s']:.1f} | "
                     f"{ratio(k, state + '/base') if var != 'base' else ''} | "
                     f"{ratio(k, state + '/off') if var not in ('off', 'base') else ''} |")
    tt = {k.split("/")[1]: v for k, v in rows.items() if k.startswith("teacher_training")}
    if tt:
        lines += ["", "The mini teacher's own training step (batch 64, 32x32, forward + backward + AdamW; the same "
                      "processes and rounds): " + "; ".join(f"{k} {v['step_ms']:.0f} ms" for k, v in tt.items())
                  + (f" ({tt['plain']['step_ms'] / tt['channels_last']['step_ms']:.2f}x with channels-last)"
                     if "plain" in tt and "channels_last" in tt else "") + "."]
    if "trained/-attention_math" in rows and "trained/on" in rows:
        on, fl = rows["trained/on"]["step_ms"], rows["trained/-attention_math"]["step_ms"]
        lines += ["", f"The attention kernel where the CLIP loss backpropagates through the bf16 mini CLIP (trained model): "
                      f"{on:.0f} ms per step with the math kernel (the default, `clip.attention=auto`), {fl:.0f} ms with "
                      f"torch's choice (`clip.attention=default`): {fl / on:.2f}x."]
    if "channels_last+bf16+flash" in tt and "channels_last+bf16" in tt:
        lines += ["", f"The mini teacher's training step in bf16: {tt['channels_last+bf16']['step_ms']:.0f} ms with the math "
                      f"attention kernel (`TeacherConfig.attention=auto`), {tt['channels_last+bf16+flash']['step_ms']:.0f} ms "
                      f"with torch's flash kernel ({tt['channels_last+bf16+flash']['step_ms'] / tt['channels_last+bf16']['step_ms']:.2f}x)."]
    g = res.get("bf16_sds_gradient")
    if g:
        lines += ["", f"bf16 teacher against float32, same noise and timesteps (8 renders): SDS gradient cosine "
                      f"{g['cosine']}, norm ratio {g['relative_norm']}, relative error {g['relative_error']} "
                      f"(native bf16 on this CPU: {'yes' if g['native_bf16'] else 'no, emulated'}; one SDS call "
                      f"{g['sds_s_float32']} s in float32, {g['sds_s_bfloat16']} s in bf16)."]
    e = res.get("empty_skip_renders")
    if e:
        lines += ["", f"Empty-space skipping on the shipped mini model's test renders ({e['views']} views, "
                      f"{e['size'][0]}x{e['size'][1]}, albedo): max |difference| {e['max_abs']:.1e}, "
                      f"PSNR {e['psnr_db']} dB against the renderer without it."]
    lines.append(END)
    replace_section("\n".join(lines), START, END, "## Faster mini training step (issue 16)")


if __name__ == "__main__": main()
