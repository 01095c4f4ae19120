"""Speed of `instant3d generate`'s outputs and of the prompt explorer on this machine, with the shipped mini model.

    python benchmarks/bench_outputs.py [--repeats 5] [--threads 2] [--out benchmarks/results/outputs_cpu_t2.json]

Measures:
  - prompt -> all default outputs (views.png with RGB/normals/depth, 16-frame turntable GIF (+ MP4 when imageio-ffmpeg is
    installed), 64^3 mesh as glb/obj/ply, the plotly page), models loaded: median over `--repeats` mini test prompts after
    one warm-up, and each stage's share of it (`generate_outputs`' own stage timings); the issue's target is under 2 s;
  - the same as a fresh `instant3d generate` process (imports and loading included), once;
  - the explorer's update (`Explorer.update`, widgets headless): a new prompt (triplane, 48^3 mesh, one view, figure),
    a camera move and a shading change (one view and the figure); median over `--repeats`; the target is under 1 s.
Wall-clock and process CPU seconds are both recorded, with the load average: the machine may be shared. On a shared
machine, `--threads 1` gives the fairer figure: its process CPU time is about what the work takes on one idle core.
Writes the JSON and rewrites the outputs section of BENCHMARKS.md.
"""
import argparse, json, os, platform, tempfile, time
from pathlib import Path
from _common import ROOT, generate_cli, write_atomic, replace_section

def markers(threads): return f"<!-- outputs:cpu:t{threads} start -->", f"<!-- outputs:cpu:t{threads} end -->"

def median(xs): xs = sorted(xs); return xs[len(xs) // 2]

def timed(fn):
    w, c = time.perf_counter(), time.process_time(); r = fn()
    return r, time.perf_counter() - w, time.process_time() - c

def bench_outputs(pipe, prompts) -> dict:
    from instant3d.export import generate_outputs, default_formats
    walls, cpus, stages = [], [], []
    with tempfile.TemporaryDirectory() as d:
        for k, p in enumerate(prompts):
            out = Path(d) / str(k); out.mkdir()
            r, w, c = timed(lambda: generate_outputs(pipe, p, out))
            if k == 0: continue  # warm-up
            walls.append(w); cpus.append(c); stages.append(r["seconds"])
    m = median(walls)
    share = {s: median([st[s] for st in stages]) for s in stages[0]}
    return dict(outputs_wall_s=round(m, 3), outputs_cpu_s=round(median(cpus), 3), outputs_min_s=round(min(walls), 3),
                stage_s={k: round(v, 3) for k, v in share.items()}, formats=list(default_formats()), size=r["size"],
                frames=r["frames"], mesh_res=r["mesh_res"], faces=r["mesh"][0]["faces"], repeats=len(walls))

def bench_cli() -> dict:
    wall, meta = generate_cli()
    return dict(cli_wall_s=round(wall, 2), cli_load_s=meta["timings"]["load"], cli_outputs_s=meta["timings"]["total_without_load"])

def bench_explorer(pipe, prompts) -> dict:
    from instant3d.explorer import Explorer, ExplorerModel
    ex = Explorer(ExplorerModel(pipe, "mini"), prompt=prompts[0])
    new, cam, mode = [], [], []
    for k, p in enumerate(prompts[1:]):
        ex.prompt.value = p
        _, w, _ = timed(ex.generate.click); new.append(w)
        _, w, _ = timed(lambda: setattr(ex.azimuth, "value", 45.0 * (k % 7 + 1) - 180)); cam.append(w)
        _, w, _ = timed(lambda: setattr(ex.mode, "value", ("lambertian", "normals", "depth", "textureless", "albedo")[k % 5])); mode.append(w)
    return dict(explorer_new_prompt_s=round(median(new), 3), explorer_camera_s=round(median(cam), 3), explorer_mode_s=round(median(mode), 3),
                explorer_new_prompt_max_s=round(max(new), 3), explorer_mesh_res=ex.mesh_res.value, explorer_size=ex.model.size)

def write_markdown(res: dict):
    START, END = markers(res["threads"])
    st, tot = res["stage_s"], sum(res["stage_s"].values())
    shares = ", ".join(f"{k} {v:.2f} s ({100 * v / tot:.0f} %)" for k, v in st.items())
    block = "\n".join([START,
        f"Command: `python benchmarks/bench_outputs.py --threads {res['threads']}`  ",
        f"Hardware: {res['hardware']}; load average {res['load_before']} before, {res['load_after']} after (1-minute, 5-minute, "
        "15-minute; a 1-minute figure near 0 means nothing else ran)", "",
        "| measurement | wall | CPU (process) | target |", "|---|---|---|---|",
        f"| prompt -> all default outputs ({', '.join(res['formats'])}; {res['size']} px, {res['frames']} frames, mesh {res['mesh_res']}^3, "
        f"~{res['faces']:,} faces), models loaded, median of {res['repeats']} prompts | {res['outputs_wall_s']:.2f} s | {res['outputs_cpu_s']:.2f} s | under 2 s |",
        f"| stages of that (median each): {shares} | | | |",
        f"| `instant3d generate` as a fresh process (imports, loading {res['cli_load_s']:.2f} s, outputs {res['cli_outputs_s']:.2f} s) | {res['cli_wall_s']:.2f} s | | |",
        f"| explorer: new prompt + Generate (triplane, {res['explorer_mesh_res']}^3 mesh, one {res['explorer_size']} px view, figure), median (max {res['explorer_new_prompt_max_s']:.2f} s) | {res['explorer_new_prompt_s']:.2f} s | | under 1 s |",
        f"| explorer: camera move (one view, figure) | {res['explorer_camera_s']:.2f} s | | under 1 s |",
        f"| explorer: shading change (one view, figure) | {res['explorer_mode_s']:.2f} s | | under 1 s |",
        END])
    replace_section(block, START, END, "## Outputs and the prompt explorer (issue 6)")

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--out", default=None, help="JSON (default benchmarks/results/outputs_cpu_tN.json)")
    ap.add_argument("--no-markdown", action="store_true")
    a = ap.parse_args()
    import torch
    from instant3d.generator import load_pipeline
    from instant3d.prompts import prompt_set
    torch.set_num_threads(a.threads)
    res = dict(hardware=f"{os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}, {torch.get_num_threads()} threads",
               threads=a.threads, load_before=" ".join(f"{x:.1f}" for x in os.getloadavg()))
    pipe, ck, note = load_pipeline(None, None)
    if ck == "random": raise SystemExit("no shipped mini checkpoint: nothing to benchmark")
    prompts = prompt_set("mini", "test")[:a.repeats + 1]
    res.update(bench_outputs(pipe, prompts)); print(json.dumps(res), flush=True)
    res.update(bench_explorer(pipe, prompt_set("mini", "test")[20:21 + a.repeats])); print(json.dumps(res), flush=True)
    res.update(bench_cli()); print(json.dumps(res), flush=True)
    res["load_after"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    write_atomic(a.out or ROOT / "benchmarks" / "results" / f"outputs_cpu_t{a.threads}.json", json.dumps(res, indent=1))
    if not a.no_markdown: write_markdown(res)

if __name__ == "__main__": main()
