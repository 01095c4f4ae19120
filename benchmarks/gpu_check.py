"""One prepared GPU check for paper scale, for the few minutes a GPU is lent (`make gpu-check`; under 8 minutes on an H100).

    python benchmarks/gpu_check.py [--tiny] [--device cuda|cpu] [--out FILE] [--md | --no-md] [--budget-s 420]

1. the `cuda`-marked tests (`pytest -m cuda --runcuda tests`), when a CUDA device is present;
2. `official` generator: triplane forward and one 256x256 render (64 + 64 samples), fp32 and bf16 autocast;
3. a paper-scale training step: the `official` generator trained by `instant3d.train.Trainer` with the Animals recipe
   (SDS on Stable Diffusion 2.1-base's UNet, VAE and text encoder, adaptive Perp-Neg and the CLIP loss with CLIP
   ViT-L/14), every frozen model built from its published config (benchmarks/configs/*.json) with random weights:
   nothing is downloaded. The batch doubles until memory or the time budget runs out; views/s and peak memory per
   batch, beside the paper's Animals run (8 A100, batch 96, about 8 h).

`--tiny` runs the same code end to end on the CPU in well under a minute with tiny configs (tests/test_gpu_check.py),
so the script is known to work before a GPU sees it. Results go to JSON (default
benchmarks/results/gpu_check_<device>.json) and, on a GPU (or with --md), to the gpu-check section of BENCHMARKS.md.
"""
import argparse, contextlib, json, platform, subprocess, sys, tempfile, time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = Path(__file__).parent / "configs"
sys.path.insert(0, str(Path(__file__).parent))
# the paper's Animals run (paper Sec. 4.2): 8 A100, batch 96, about 8 h; 40,000 steps of ours give ~2,000 Views-PP
PAPER_ANIMALS = dict(gpus=8, batch=96, hours=8.0, steps=40_000)
PAPER_VIEWS_PER_S_PER_GPU = PAPER_ANIMALS["batch"] * PAPER_ANIMALS["steps"] / (PAPER_ANIMALS["hours"] * 3600) / 8
TINY = {  # overrides of the published configs for --tiny: the same classes and code paths, a few channels
    "sd21_base_unet": dict(block_out_channels=[32, 32, 64, 64], attention_head_dim=[2, 2, 4, 4], layers_per_block=1,
                           norm_num_groups=8, cross_attention_dim=32, sample_size=8),
    "sd21_base_vae": dict(block_out_channels=[8, 16, 16, 16], layers_per_block=1, norm_num_groups=8, sample_size=64),
    "sd21_base_text_encoder": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4),
    "clip_vit_l14": dict(projection_dim=16,
                         text_config=dict(hidden_size=32, intermediate_size=64, num_attention_heads=4,
                                          num_hidden_layers=2, max_position_embeddings=77, vocab_size=49408,
                                          hidden_act="quick_gelu", projection_dim=16),
                         vision_config=dict(hidden_size=32, intermediate_size=64, num_attention_heads=4,
                                            num_hidden_layers=2, image_size=32, patch_size=8, hidden_act="quick_gelu",
                                            projection_dim=16)),
}


def published(name: str, tiny: bool) -> dict:
    "The published config `name` (benchmarks/configs), without comments, with the tiny overrides when asked."
    cfg = {k: v for k, v in json.loads((CONFIGS / f"{name}.json").read_text()).items() if not k.startswith("_")}
    return dict(cfg, **TINY[name]) if tiny else cfg


def generator_config(tiny: bool):
    "The `official` generator; tiny: the same layout (six stages, same modules) with a few channels, 32 px planes."
    from instant3d.generator import Instant3DConfig
    from instant3d.token_to_plane import TokenToPlaneConfig
    from instant3d.style import StyleConfig
    from instant3d.decoder import DecoderConfig
    from instant3d.field import TriplaneFieldConfig
    from instant3d.render import RenderConfig
    cfg = Instant3DConfig.official()
    if not tiny: return cfg
    return replace(cfg,
        token_to_plane=TokenToPlaneConfig(token_dim=32, n_tokens=77, inner_dim=16, heads=2, dim_head=8,
                                          base_channels=8, base_res=1),
        style=StyleConfig(token_dim=32, n_tokens=77, inner_dim=16, heads=2, dim_head=8, text_dim=16, noise_dim=16),
        decoder=replace(DecoderConfig.official(), in_channels=8, base_res=1, mid_channels=16, mid_heads=2, head_dim=8,
                        cross_attention_dim=32, style_in_dim=32, style_dim=16, norm_groups=4, out_norm_groups=2,
                        stages=((16, 1, 0, 4), (16, 1, 2, 4), (8, 1, 1, 4), (8, 1, 1, 4), (8, 1, 0, 4), (8, 1, 0, 2)),
                        triplane_channels=4),
        field=replace(TriplaneFieldConfig.official(), channels=4, hidden=8),
        render=replace(RenderConfig.official(), n_samples=8, n_importance=8, height=16, width=16))


def tokenizer(pad_token: str):
    "A CLIP tokenizer without downloads: the word tokenizer of instant3d.text (words not in it fall back to bytes)."
    from instant3d.text import build_word_tokenizer, MINI_WORDS
    return build_word_tokenizer(MINI_WORDS, 77, pad_token=pad_token)


def build_frozen(tiny: bool, device: str, dtype):
    "SDSGuidance (SD 2.1-base UNet, VAE, scheduler, text encoder) and Clip (ViT-L/14), random weights, on `device`."
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModel
    from instant3d.clip_loss import Clip
    from instant3d.sds import SDSConfig, SDSGuidance
    from instant3d.text import TextEncoder
    from diffusers.utils import logging as diffusers_logging
    diffusers_logging.set_verbosity_error()  # random-weight models cast with .to(dtype): no advice needed
    torch.manual_seed(0)
    with torch.device(device):  # built where they run: no CPU init of a billion parameters
        unet = UNet2DConditionModel(**published("sd21_base_unet", tiny)).to(dtype)
        vae = AutoencoderKL(**published("sd21_base_vae", tiny)).to(dtype)
        text = CLIPTextModel(CLIPTextConfig(**published("sd21_base_text_encoder", tiny)))
        c = published("clip_vit_l14", tiny)
        clip_model = CLIPModel(CLIPConfig(text_config=c["text_config"], vision_config=c["vision_config"],
                                          projection_dim=c["projection_dim"])).to(dtype)
    sch = DDPMScheduler(**{k: v for k, v in published_sched().items()})
    sds_cfg = replace(SDSConfig.paper(), latent_render_size=64 if tiny else 512,
                      dtype={torch.float32: "float32", torch.bfloat16: "bfloat16"}[dtype])
    enc = TextEncoder(text, tokenizer("!"))
    guidance = SDSGuidance(sds_cfg, unet, sch, enc, vae).to(device)
    clip = Clip(clip_model, tokenizer("<|endoftext|>")).to(device)
    return guidance, clip, enc


def published_sched() -> dict:
    return {k: v for k, v in json.loads((CONFIGS / "sd21_base_scheduler.json").read_text()).items()
            if not k.startswith("_")}


def n_params(m) -> int: return sum(p.numel() for p in m.parameters())


def timed(fn, device: str, repeats: int) -> dict:
    "Median and min wall seconds of `fn()` after one warm-up call; peak CUDA memory of the timed calls."
    import torch
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    fn(); sync()
    if device.startswith("cuda"): torch.cuda.reset_peak_memory_stats()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter(); fn(); sync(); ts.append(time.perf_counter() - t0)
    ts.sort()
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    return dict(median_s=round(ts[len(ts) // 2], 5), min_s=round(ts[0], 5), repeats=repeats,
                peak_gib=None if peak is None else round(peak, 2))


def run_cuda_tests(device: str, timeout_s: int) -> dict:
    "The tests marked `cuda`, in a subprocess; skipped (and said so) without a CUDA device."
    if not device.startswith("cuda"): return dict(status="skipped: no CUDA device")
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "--runcuda", "tests"], cwd=ROOT,
                           capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired: return dict(status=f"timed out after {timeout_s} s")
    tail = (p.stdout.strip().splitlines() or [""])[-1]
    return dict(status="passed" if p.returncode == 0 else f"failed (exit {p.returncode})", summary=tail,
                seconds=round(time.perf_counter() - t0, 1))


def bench_generator(gen_cfg, device: str, tiny: bool) -> dict:
    "Triplane forward and one test render (256x256; tiny: 32x32) of random weights, fp32 and bf16 autocast."
    import torch
    from instant3d.cameras import four_views
    from instant3d.generator import Instant3D
    torch.manual_seed(0)
    with torch.device(device): model = Instant3D(gen_cfg).eval()
    tc = gen_cfg.token_to_plane
    tok = torch.randn(1, tc.n_tokens, tc.token_dim, device=device)
    noise = torch.randn(1, gen_cfg.style.noise_dim, device=device)
    size = 32 if tiny else 256
    rc = replace(gen_cfg.render.for_test(), height=size, width=size)
    cam = four_views(gen_cfg.camera)[:1].to(device)
    bg = torch.ones(1, 3, device=device)
    out = dict(parameters=n_params(model), render_size=size, samples_per_ray=[rc.n_samples, rc.n_importance])
    for name, dt in (("fp32", None), ("bf16", torch.bfloat16)):
        if dt is not None and device == "cpu" and not tiny: continue
        ac = torch.autocast(device.split(":")[0], dtype=dt) if dt else contextlib.nullcontext()
        with torch.no_grad(), ac:
            tp = model.triplane(tok, noise=noise)
            out[f"forward_{name}"] = timed(lambda: model.triplane(tok, noise=noise), device, 1 if tiny else 10)
            try:
                out[f"render_{name}"] = timed(lambda: model.render(tp, cam, cfg=rc, perturb=False, background=bg),
                                              device, 1 if tiny else 3)
            except ValueError as e:  # e.g. rays computed under autocast are not unit length: recorded, not fatal
                out[f"render_{name}"] = dict(status=f"failed: {' '.join(str(e).split())[:200]}")
    del model
    return out


def bench_training(gen_cfg, device: str, tiny: bool, deadline: float) -> dict:
    "Trainer.train_step at doubling batch sizes until memory or time runs out: views/s and peak memory per batch."
    import torch
    from instant3d.train import Trainer
    from instant3d.train_config import train_preset
    from instant3d.distributed import DistInfo
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    t0 = time.perf_counter()
    guidance, clip, enc = build_frozen(tiny, device, dtype)
    cfg = replace(train_preset("animals"), generator=gen_cfg, sds=guidance.cfg, batch_size=1, eval_every=0,
                  preview_every=0, checkpoint_every=0, bf16=device.startswith("cuda"),
                  render_size=16 if tiny else None)
    with tempfile.TemporaryDirectory() as d, torch.device(device):
        tr = Trainer(cfg, d, DistInfo(device=device), guidance=guidance, clip=clip, gen_text=enc)
    out = dict(build_s=round(time.perf_counter() - t0, 1), generator_parameters=n_params(tr.model),
               teacher_parameters=dict(unet=n_params(guidance.unet), vae=n_params(guidance.vae),
                                       text_encoder=n_params(enc.text_model)),
               clip_parameters=n_params(clip.model), frozen_dtype=str(dtype).replace("torch.", ""),
               generator_autocast_bf16=cfg.bf16, render_size=tr.render_cfg.height,
               samples_per_ray=[tr.render_cfg.n_samples, tr.render_cfg.n_importance],
               perp_neg=cfg.perp_neg.mode, clip_weight=cfg.clip.weight, batches=[])
    batch = 1
    while True:
        tr.cfg = replace(tr.cfg, batch_size=batch)
        try:
            r = timed(tr.train_step, device, 1 if tiny else 2)
        except ValueError as e:
            if not tr.cfg.bf16: raise
            # bf16 autocast of the generator fails: recorded, and the step measured without it
            out["generator_autocast_bf16"] = f"failed, measured in fp32: {' '.join(str(e).split())[:200]}"
            tr.cfg = replace(tr.cfg, bf16=False)
            continue
        except torch.cuda.OutOfMemoryError:
            out["batches"].append(dict(batch=batch, status="out of memory"))
            break
        finally:
            if device.startswith("cuda"): torch.cuda.empty_cache()
        out["batches"].append(dict(batch=batch, status="ok", step_s=r["median_s"],
                                   views_per_s=round(batch / r["median_s"], 2), peak_gib=r["peak_gib"]))
        left = deadline - time.perf_counter()
        if (tiny and batch >= 2) or left < 4 * r["median_s"] * 2 + 10: break  # the next batch: ~3 steps, twice as long
        batch *= 2
    ok = [b for b in out["batches"] if b["status"] == "ok"]
    best = max(ok, key=lambda b: b["batch"])
    out.update(largest_batch=best["batch"], views_per_s=best["views_per_s"], peak_gib=best["peak_gib"],
               paper_views_per_s_per_a100=round(PAPER_VIEWS_PER_S_PER_GPU, 1), paper_animals=PAPER_ANIMALS)
    return out


def markdown(res: dict) -> str:
    "The gpu-check section of BENCHMARKS.md."
    g, t = res["generator"], res["training"]
    fmt = lambda d: f"{d['median_s'] * 1e3:.1f} ms" if d and "median_s" in d else (d or {}).get("status", "n/a")
    lines = ["<!-- gpu-check start -->", f"Device: {res['device_name']} ({res['device']}), torch {res['torch']}, "
             f"{res['date']}; wall time {res['seconds']:.0f} s (`make gpu-check`, {'tiny' if res['tiny'] else 'full'}).",
             "", f"- `cuda` tests: {res['cuda_tests']['status']} {res['cuda_tests'].get('summary', '')}".rstrip(),
             f"- `official` generator ({g['parameters']:,} parameters): triplane forward fp32 {fmt(g.get('forward_fp32'))}, "
             f"bf16 {fmt(g.get('forward_bf16'))} (paper: about 25 ms on an A100); one {g['render_size']}x"
             f"{g['render_size']} view fp32 {fmt(g.get('render_fp32'))}, bf16 {fmt(g.get('render_bf16'))} "
             "(paper: about 0.5 s).",
             f"- Training step (official generator + SD 2.1-base UNet/VAE/text encoder + CLIP ViT-L/14, random weights, "
             f"frozen models in {t['frozen_dtype']}, generator bf16 autocast {t['generator_autocast_bf16']}, "
             f"{t['render_size']}x{t['render_size']} renders, Perp-Neg {t['perp_neg']}):", "",
             "| batch | step | views/s | peak memory |", "|---|---|---|---|"]
    for b in t["batches"]:
        lines.append(f"| {b['batch']} | {b['step_s']:.3f} s | {b['views_per_s']} | {b['peak_gib']} GiB |"
                     if b["status"] == "ok" else f"| {b['batch']} | {b['status']} | | |")
    lines += ["", f"Largest batch that fit: {t['largest_batch']}, {t['views_per_s']} views/s on one GPU; the paper's "
              f"Animals run (8 A100, batch 96, about 8 h for our 40,000 steps) is about "
              f"{t['paper_views_per_s_per_a100']} views/s per A100.", "<!-- gpu-check end -->"]
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny configs: the whole check on a CPU in well under a minute")
    ap.add_argument("--device", default=None, help="cuda | cpu (default: cuda when available)")
    ap.add_argument("--out", default=None, help="result JSON (default benchmarks/results/gpu_check_<device>.json)")
    ap.add_argument("--md", action=argparse.BooleanOptionalAction, default=None,
                    help="rewrite the gpu-check section of BENCHMARKS.md (default: on a GPU, full size)")
    ap.add_argument("--budget-s", type=float, default=420.0, help="stop growing the batch after this many seconds")
    args = ap.parse_args(argv)
    import torch
    t_start = time.perf_counter()
    deadline = t_start + args.budget_s
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu_check: error: --device cuda but no CUDA device is available")
    if not args.tiny and device == "cpu":
        raise SystemExit("gpu_check: error: the full check needs a CUDA GPU; use --tiny on a CPU")
    torch.backends.cuda.matmul.allow_tf32 = False  # the authors' setting (TF32 off): fp32 means fp32
    torch.backends.cudnn.allow_tf32 = False
    gen_cfg = generator_config(args.tiny)
    res = dict(device=device, tiny=args.tiny, torch=torch.__version__, python=platform.python_version(),
               device_name=torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor() or "cpu",
               date=time.strftime("%Y-%m-%d"))
    res["cuda_tests"] = run_cuda_tests(device, timeout_s=150)
    print("cuda tests:", res["cuda_tests"]["status"], flush=True)
    res["generator"] = bench_generator(gen_cfg, device, args.tiny)
    print("generator:", json.dumps(res["generator"]), flush=True)
    res["training"] = bench_training(gen_cfg, device, args.tiny, deadline)
    print("training:", json.dumps(res["training"]["batches"]), flush=True)
    res["seconds"] = round(time.perf_counter() - t_start, 1)
    from instant3d.files import write_json
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / f"gpu_check_{device.split(':')[0]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, res)
    if args.md if args.md is not None else (device.startswith("cuda") and not args.tiny):
        from _common import replace_section
        replace_section(markdown(res), "<!-- gpu-check start -->", "<!-- gpu-check end -->",
                        "## Paper scale on one GPU (`make gpu-check`)")
    print(f"wrote {out} ({res['seconds']} s)")
    return res


if __name__ == "__main__":
    main()
