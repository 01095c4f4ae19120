"Reproduction contracts: plans, dry runs, refusal to mix plans, and the claim arithmetic on synthetic rows with known answers."
import json, os, subprocess, sys
from dataclasses import replace
from pathlib import Path
import pytest
from instant3d.plans import QUICK, FULL, ReproducePlan, VARIANTS, ABLATION_ROWS, PERP_NEG_ROWS, plan_runs, plan_steps, reduced_world
from instant3d.verdicts import summarise, results_section, update_results_md, views_to_reach
from instant3d.decide import DECIDE, DecidePlan
from instant3d.mini.world import parse_prompt

EXE = str(Path(sys.executable).parent / "instant3d")
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")


def test_reduced_world_is_held_out_and_covered():
    for plan in (QUICK, FULL):
        w = reduced_world(plan.n_train, plan.n_test, plan.world_seed)
        assert len(w["train"]) == plan.n_train and len(w["test"]) == plan.n_test and not set(w["train"]) & set(w["test"])
        seen = {s: {getattr(parse_prompt(p), s) for p in w["train"]} for s in ("colour", "body", "support", "gadget", "hat", "hat_colour")}
        assert all(getattr(parse_prompt(p), s) in seen[s] for p in w["test"] for s in seen)
    assert reduced_world(4, 4, 0) == reduced_world(4, 4, 0)


def test_plans_cover_every_claim():
    runs = plan_runs(FULL)
    for s in FULL.seeds:
        got = {r["variant"] for r in runs if r["seed"] == s}
        assert got == set(VARIANTS) | {"baseline"}
    full = next(r for r in runs if r["variant"] == "full")
    assert {FULL.reference_budget, FULL.ablation_budget} <= set(full["marks"]) and max(full["marks"]) == FULL.instant3d_max
    assert plan_steps(QUICK) == dict(runs=33, amortised_steps=72, baseline_steps=24, scorings=51)


def _rows(ratio_base=10.0, sigmoid_slow=12.0, seeds=(0, 1, 2)):
    "Synthetic curve rows: CLIP-RP = a log-linear function of Views-PP, so the ratios are known."
    import math
    rows = [dict(method="ground_truth", variant="ground_truth", seed=0, views_pp=0, step=0, clip_rp="", top1="", gt_clip_rp="", janus=0.0, front=1.0, train_seconds="")]
    f = lambda v, slow: 0.1 * math.log10(v / slow) + 0.5
    for s in seeds:
        e = 0.001 * s
        for v in (125, 250, 500, 1000, 2000):
            for var, slow in (("full", 1.0), ("sigmoid", sigmoid_slow)):
                rows.append(dict(method="instant3d", variant=var, seed=s, views_pp=v, clip_rp=f(v, slow) + e, janus=0.2, front=0.9, gt_clip_rp=0.9))
        for var in set(VARIANTS) - {"full", "sigmoid"}:
            bad = var in ABLATION_ROWS or var == "perp_neg_off"
            rows.append(dict(method="instant3d", variant=var, seed=s, views_pp=500, clip_rp=f(500, 1.0) - (0.2 if bad else 0) + e,
                             janus=0.5 if var in ("perp_neg_off", "perp_neg_fixed_1") else 0.25, front=0.5 if var == "perp_neg_fixed_4" else 0.9, gt_clip_rp=0.9))
        for v in (125, 250, 500, 1000, 2000, 4000, 8000, 16000, 32000):
            rows.append(dict(method="baseline", variant="baseline", seed=s, views_pp=v, clip_rp=f(v, ratio_base) + e, janus=0.0, front=1.0, gt_clip_rp=0.9))
    return rows


def test_summary_on_known_curves():
    plan = ReproducePlan("synthetic", n_train=16, n_test=8, baseline_max=32000, sigmoid_target=0.8645)  # the class's default budgets (2,000 / 500 Views-PP); the scaled-sigmoid reaches the target at about 150
    S = summarise(_rows(), plan)
    assert S["amortisation"]["ratio"] == pytest.approx(10.0, rel=1e-2) and S["amortisation"]["verdict"] == "confirmed"
    assert S["sigmoid"]["ratio"] == pytest.approx(12.0, rel=1e-2) and S["sigmoid"]["verdict"] == "confirmed"
    assert all(a["verdict"] == "confirmed" for a in S["ablations"][1:])
    assert S["perp_neg"]["verdict"] == "confirmed"
    S2 = summarise(_rows(ratio_base=0.5, sigmoid_slow=3.0), plan)
    assert S2["amortisation"]["verdict"] == "refuted" and S2["sigmoid"]["verdict"] == "inconclusive"
    S3 = summarise(_rows(ratio_base=1000.0), plan)  # never reached on the grid (to 32,000): a lower bound
    assert S3["amortisation"]["ratio"] is None and S3["amortisation"]["ratio_lower_bound"] == 16.0


def test_results_section_replaces_its_own_markers(tmp_path):
    S = summarise(_rows(), ReproducePlan("full", n_train=16, n_test=8, baseline_max=32000, sigmoid_target=0.8645))  # the synthetic rows use the default budgets
    meta = dict(plan=dict(seeds=[0, 1, 2], n_train=16, n_test=8, world_seed=0, eval_views=4, eval_seed=1234, ablation_budget=500, sigmoid_target=0.8,
                          instant3d_max=2000, baseline_max=32000), hardware=dict(cpu="x", cores=2, torch_threads=2, gpu=None, torch="2"),
                command="instant3d reproduce --full", runs={"a": 60.0}, started="t0", finished="t1", commit="abc")
    md = tmp_path / "R.md"; md.write_text("# Results\nintro\n")
    sec = results_section(S, meta, "results/full")
    update_results_md(md, "full", sec); update_results_md(md, "full", sec)
    text = md.read_text()
    assert text.startswith("# Results\nintro") and text.count("<!-- reproduce:full -->") == 1 and "10.00x" in text
    assert "saved state" not in sec  # no run was continued: no note
    two = results_section(S, dict(meta, runs={"a": 60.0, "b": 30.0}, resumed=["b"]), "results/full")
    assert "1 run continued from a saved state counts only its last segment" in two and "1.5 min summed over 2 runs" in two


def test_cli_dry_run_and_errors(tmp_path):
    r = subprocess.run([EXE, "reproduce", "--full", "--dry-run"], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["runs"] == len(plan_runs(FULL))
    r = subprocess.run([EXE, "reproduce", "--quick", "--full"], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    (tmp_path / "res" / "quick").mkdir(parents=True)
    (tmp_path / "res" / "quick" / "meta.json").write_text(json.dumps(dict(plan={"name": "other"})))
    r = subprocess.run([EXE, "reproduce", "--quick", "--out", str(tmp_path / "res"), "--results-md", str(tmp_path / "R.md")], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 2 and "different plan" in r.stderr and not (tmp_path / "R.md").exists()


def test_cli_quick_end_to_end(tmp_path):
    "The whole quick plan with the shipped mini teacher and CLIP (90 s on a quiet 2-core CPU, RESULTS.md): every table gets numbers."
    r = subprocess.run([EXE, "reproduce", "--quick", "--no-progress", "--out", str(tmp_path / "res"), "--results-md", str(tmp_path / "R.md")],
                       capture_output=True, text=True, env=dict(ENV, OMP_NUM_THREADS="2"), timeout=1800)
    assert r.returncode == 0, r.stderr[-2000:]
    S = json.loads((tmp_path / "res" / "quick" / "summary.json").read_text())
    assert len(S["fig10"]["instant3d"]) == 3 and len(S["fig10"]["baseline"]) == 3 and all(a["clip_rp"][2] == 3 for a in S["ablations"])
    assert "<!-- reproduce:quick -->" in (tmp_path / "R.md").read_text()


class _Stop(Exception): pass

@pytest.mark.parametrize("method", ["instant3d", "baseline"])
def test_interrupted_run_resumes_to_the_same_rows(tmp_path, monkeypatch, method):
    "A run stopped after its last saved state and started again gives the rows of an uninterrupted run."
    from instant3d import plans as P
    from instant3d.train import Trainer
    world = P.reduced_world(QUICK.n_train, QUICK.n_test, QUICK.world_seed)
    shared = P.load_shared(QUICK.train_config(), "cpu")
    marks = [2, 4, 8]
    def run(partial=None):
        if method == "baseline": return P.baseline_rows(QUICK, 0, world, shared, marks, partial=partial, save_every=1)
        return P.run_amortised(QUICK, "full", 0, world, shared, 8, marks, partial=partial, save_every=2)
    straight = run()
    partial, calls, real = tmp_path / "p.pt", [0], Trainer.train_step
    def failing(self):
        calls[0] += 1
        if calls[0] == (5 if method == "baseline" else 3): raise _Stop  # baseline: 4 trainers per step, stops in its 2nd step
        return real(self)
    monkeypatch.setattr(Trainer, "train_step", failing)
    with pytest.raises(_Stop): run(partial)
    assert partial.is_file()
    monkeypatch.setattr(Trainer, "train_step", real)
    resumed = run(partial)
    rows = lambda res: res if method == "baseline" else res[0]
    for a, b in zip(rows(straight), rows(resumed), strict=True):
        for k in ("views_pp", "step", "clip_rp", "top1", "janus", "front"): assert a[k] == pytest.approx(b[k], abs=1e-5), k
    if method == "instant3d":
        for a, b in zip(straight[1], resumed[1], strict=True): assert a == pytest.approx(b, abs=1e-5)


def test_parallel_processes_share_a_plan(tmp_path, monkeypatch):
    "Two workers on one folder (threads here: the lock and the claims are per open file and per process): every run is trained once, rows and meta are complete."
    import threading, time
    from instant3d import plans as P, reproduce as R, run_queue as Q
    calls, lock = [], threading.Lock()
    def fake_run(*key, marks):
        with lock: calls.append(key)
        time.sleep(0.02)
        return [dict(views_pp=m, step=m, clip_rp=0.01 * m, top1=0.0, gt_clip_rp=0.9, janus=0.0, front=1.0, train_seconds=0.0, per_prompt=[dict(prompt="p", clip_rp=0.1)]) for m in marks]
    monkeypatch.setattr(R, "load_shared", lambda cfg, device="cpu": dict(device=device))  # looked up where `reproduce` runs
    monkeypatch.setattr(P, "view_feature_rates", lambda *a, **k: dict(janus=0.0, front=1.0))
    monkeypatch.setattr(P, "run_amortised", lambda plan, v, s, w, sh, vpp, marks, **k: (fake_run("instant3d", v, s, marks=marks), [dict(step=1, views_pp=1, loss=1.0)]))
    monkeypatch.setattr(P, "baseline_rows", lambda plan, s, w, sh, marks, **k: fake_run("baseline", "baseline", s, marks=marks))
    errors = []
    def worker():
        try: R.reproduce(QUICK, tmp_path, progress=False)
        except Exception as e: errors.append(e)
    ts = [threading.Thread(target=worker) for _ in range(2)]
    for t in ts: t.start()
    for t in ts: t.join()
    assert not errors, errors
    runs = plan_runs(QUICK)
    assert sorted(calls) == sorted((r["method"], r["variant"], r["seed"]) for r in runs)  # each run once
    folder = tmp_path / "quick"
    assert Q.unfinished(folder, QUICK) == [] and not list((folder / "partial").glob("*.claim"))
    meta = json.loads((folder / "meta.json").read_text())
    assert len(meta["runs"]) == len(runs)
    assert len(P.read_rows(folder / "per_prompt.csv")) == sum(len(r["marks"]) for r in runs)
    assert sum(r["method"] == "ground_truth" for r in P.read_rows(folder / "curves.csv")) == 1


def test_cli_status(tmp_path):
    "`--status` trains nothing and says how far a folder has got: here nothing finished, every run left."
    r = subprocess.run([EXE, "reproduce", "--quick", "--status", "--out", str(tmp_path)], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"0 of {len(plan_runs(QUICK))} runs finished" in r.stdout and r.stdout.count("  left ") == len(plan_runs(QUICK))
    assert not (tmp_path / "quick" / "meta.json").exists()


def test_cli_plan_names_the_same_plans():
    "`--plan quick` is `--quick`; `--plan decide` and `--decide` list the decide plan's runs with an estimate."
    out = lambda *a: json.loads(subprocess.run([EXE, "reproduce", *a, "--dry-run"], capture_output=True, text=True, env=ENV, timeout=300).stdout)
    a, b = out("--quick"), out("--plan", "quick")
    assert a == b and a["plan"] == "quick" and a["amortised_steps"] == 72
    d = out("--decide")
    assert d["plan"] == "decide" and d["runs"] == len(plan_runs(DECIDE)) and d["estimate"]["amortised_steps"] == d["amortised_steps"]


def test_decide_plan_runs_through_the_queue_and_reports(tmp_path, monkeypatch):
    "A small decide plan (world v2) through the queue with stand-in training: every run once, summary.json with a verdict per claim, the section and the claims table."
    from instant3d import plans as P, reproduce as R, run_queue as Q
    from instant3d.claims import write_decide_report
    plan = DecidePlan("decide", n_train=4, n_test=4, seeds=(0, 1, 2), n_open=2, instant3d_max=4, ablation_budget=2, reference_budget=4,
                      sigmoid_max=8, baseline_max=8, baseline_sigmoid_max=16, baseline_sigmoid_prompts=2, open_prompts=0)
    calls = []
    def fake(key, marks, prompts):
        calls.append(key)
        return [dict(views_pp=m, step=m, clip_rp=0.5 * (1 - 0.5 ** m) + 0.01 * key[2], top1=0.0, gt_clip_rp=0.9, janus=0.1, front=0.9,
                     train_seconds=0.0, per_prompt=[dict(prompt=p, clip_rp=0.5 * (1 - 0.5 ** m)) for p in prompts]) for m in marks]
    with pytest.raises(ValueError, match="runs in world v2"): R.reproduce(plan, tmp_path / "res")  # the shipped models are world v1
    monkeypatch.setattr(R, "run_world_version", lambda cfg: "v2")  # stands in for world v2 models
    monkeypatch.setattr(R, "load_shared", lambda cfg, device="cpu": dict(device=device))
    monkeypatch.setattr(P, "view_feature_rates", lambda *a, **k: dict(janus=0.0, front=1.0))
    monkeypatch.setattr(P, "run_amortised", lambda plan, v, s, w, sh, vpp, marks, **k: (fake(("instant3d", v, s), marks, w["test"]), []))
    monkeypatch.setattr(P, "baseline_rows", lambda plan, s, w, sh, marks, variant="baseline", n_prompts=None, **k:
                        fake(("baseline", variant, s), marks, w["test"][:n_prompts]))
    folder = R.reproduce(plan, tmp_path / "res", command="instant3d reproduce --plan decide", progress=False)
    assert sorted(calls) == sorted((r["method"], r["variant"], r["seed"]) for r in plan_runs(plan)) and Q.unfinished(folder, plan) == []
    meta = json.loads((folder / "meta.json").read_text())
    assert len(meta["world"]["train"]) == 6 and meta["plan"]["world_version"] == "v2" and meta["plan"]["seeds"] == [0, 1, 2]
    md = tmp_path / "R.md"; md.write_text("# Results\n\nintro\n")
    S = write_decide_report(folder, plan, md, rel="results/decide")
    assert json.loads((folder / "summary.json").read_text())["world"] == "world v2"
    verdicts = [S["amortisation"]["verdict"], *(a["verdict"] for a in S["ablations"]), S["sigmoid"]["instant3d"]["verdict"],
                S["sigmoid"]["baseline"]["verdict"], S["perp_neg"]["verdict"]]
    assert len(verdicts) == 8 and all(v in ("confirmed", "refuted", "inconclusive") for v in verdicts)
    assert S["sigmoid"]["init_gradient"]["plain"] > 0
    text = md.read_text()
    assert "<!-- reproduce:decide@v2 -->" in text and text.index("<!-- claims -->") < text.index("<!-- reproduce:decide@v2 -->")
