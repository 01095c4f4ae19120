"""Do the speed levers change what training learns? Paired short runs with every lever off and on, then held-out scores.

    python benchmarks/quality_levers.py [--steps 600] [--seeds 0 1 2] [--jobs 2] [--out results/levers_quality]

Each run is `instant3d train --preset mini` for `--steps` steps (seed s: the same prompts, cameras, style noise and
timesteps in both arms), one torch thread per process, `--jobs` processes at once. Arm `off` sets every lever that can
change numbers off (empty-space skipping, channels-last teacher, skipped zero-weight Perp-Neg rows, bf16); arm `on` keeps
the defaults. Each finished run is scored by `instant3d eval --split test --seed 23 --max-prompts 128 --json` (the first 128
held-out prompts: CLIP-RP, top-1, silhouette IoU) and its row written to OUT/ARM_seedS.json, with the training seconds. Runs already scored are
skipped, so the command resumes after an interruption (an unfinished run resumes from its checkpoint).

The rule, fixed before the first run: the levers keep quality when, for held-out CLIP-RP and for silhouette IoU, the mean
over seeds of the paired difference (on - off, same seed) is no larger in absolute value than the seed spread of the
`off` arm (max - min over its seeds). A lever set that fails it is reported as changing results (and would be switched
off by default). nbs/46_speed.ipynb computes the verdict from the committed rows.
"""
import argparse, json, os, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXE = str(Path(sys.executable).with_name("instant3d"))
from instant3d.train_config import SPEED_LEVERS_OFF
OFF = list(SPEED_LEVERS_OFF)


def one(arm: str, seed: int, a) -> dict:
    out = Path(a.out); row_path = out / f"{arm}_seed{seed}.json"
    if row_path.exists(): return json.loads(row_path.read_text())
    run = Path(a.runs) / f"{arm}_seed{seed}"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    sets = [f"steps={a.steps}", f"seed={seed}", "eval_every=0", "preview_every=0", f"checkpoint_every={a.steps // 4}"]
    sets += OFF if arm == "off" else []
    t0 = time.time()
    run.parent.mkdir(parents=True, exist_ok=True)
    with open(run.parent / f"{run.name}.log", "a") as log:
        resume = ["--resume"] if (run / "checkpoint").is_dir() else []
        subprocess.run([EXE, "train", "--preset", "mini", "--out", str(run), *resume, "--no-progress", "--set",
                        *sets], check=True, env=env, stdout=log, stderr=log)
    train_wall = time.time() - t0
    p = subprocess.run([EXE, "eval", "--checkpoint", str(run / "model"), "--split", "test", "--seed", "23", "--json",
                        "--csv", str(run / "eval_test_seed23.csv"), "--max-prompts", str(a.max_prompts)], check=True, env=env, capture_output=True,
                       text=True)
    scores = json.loads(p.stdout.strip().splitlines()[-1])
    import csv
    with open(run / "metrics.csv", newline="") as f: last = list(csv.DictReader(f))[-1]
    row = dict(arm=arm, seed=seed, steps=a.steps, train_wall_s=round(train_wall, 1),
               train_seconds=float(last["seconds"]), sets=sets, **{k: scores[k] for k in scores if k not in ("checkpoint", "seed", "csv")}, eval_seed=scores["seed"])
    from instant3d.files import write_json
    out.mkdir(parents=True, exist_ok=True); write_json(row_path, row)
    print(json.dumps(row), flush=True)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--max-prompts", type=int, default=128, help="held-out test prompts scored per run")
    ap.add_argument("--out", default=str(ROOT / "results" / "levers_quality"))
    ap.add_argument("--runs", default=str(ROOT / "runs" / "levers_quality"))
    a = ap.parse_args()
    todo = [(arm, s) for s in a.seeds for arm in ("off", "on")]
    with ThreadPoolExecutor(a.jobs) as ex:
        rows = list(ex.map(lambda x: one(*x, a), todo))
    for r in rows: print(r["arm"], r["seed"], {k: v for k, v in r.items() if k not in ("sets",)})


if __name__ == "__main__": main()
