"The decide plan's rules on synthetic rows with known answers: the knee, pairing by seed, every verdict branch, the 10x rule, the claims table, the cost, and the command line."
import json, math, subprocess
from dataclasses import replace
from pathlib import Path
import pytest
from conftest import EXE, ENV
from instant3d.decide import (DECIDE, DecidePlan, OTHER_VARIANTS, decide_runs, knee, paired_test, seeds_needed,
                              ten_x_claim, ablation_verdict, sigmoid_verdicts, perp_neg_verdict, amortisation_verdict,
                              summarise_decide, estimate_hours, step_seconds, section_key)
from instant3d.claims import claim_rows, check_claim_row, claims_table_md, update_claims_table, rules_md
from instant3d.plans import FULL, plan_runs, plan_steps
from instant3d.verdicts import differs, mean_std

SEEDS = (0, 1, 2)
SEED_SHIFT = {0: -0.05, 1: 0.0, 2: 0.05}  # shared by every variant of a seed: the paired test removes it


def conv(v, scale=4.0, top=0.5):
    "A curve past its knee by 16 Views-PP: top (1 - exp(-v / scale))."
    return top * (1 - math.exp(-v / scale))


def _row(method, variant, seed, v, clip_rp, **kw):
    return dict(dict(method=method, variant=variant, seed=seed, views_pp=v, clip_rp=clip_rp, janus=0.1, front=0.9,
                     gt_clip_rp=0.9), **kw)


def make_rows(delta=None, noise=None, slow=(), perp=None, diversity=None, sigmoid_scale=64.0, baseline_scale=64.0):
    """Rows of a decide plan: every variant = conv(v) + delta[variant] + the seed's shift (+ noise[variant][seed]);
    `slow` variants still rise at their budget; perp: {variant: (janus, front)}; diversity: {variant: value}."""
    delta, noise, perp, diversity = delta or {}, noise or {}, perp or {}, diversity or {}
    rows = [dict(method="ground_truth", variant="ground_truth", seed=0, views_pp=0, clip_rp="", janus=0.0, front=1.0)]
    for s in SEEDS:
        def add(variant, marks, scale=4.0):
            for v in marks:
                j, f = perp.get(variant, (0.1, 0.9))
                extra = {"diversity": diversity[variant] + 0.01 * s} if variant in diversity and v == 32 else {}
                c = conv(v, 64.0 if variant in slow else scale) + delta.get(variant, 0) + SEED_SHIFT[s] \
                    + noise.get(variant, {}).get(s, 0)
                rows.append(_row("instant3d", variant, s, v, c, janus=j, front=f, **extra))
        add("full", [1, 2, 4, 8, 16, 32, 64])
        for v in OTHER_VARIANTS: add(v, [4, 8, 16, 32])
        add("sigmoid", [1, 2, 4, 8, 16, 32, 64, 128], sigmoid_scale)
        for v in (4, 8, 16, 32, 64, 128, 256, 512, 1024):
            rows.append(_row("baseline", "baseline", s, v, conv(v, baseline_scale) + SEED_SHIFT[s]))
    return rows


def prompt_rows(scaled=16.0, plain=512.0, max_plain=4096):
    "per_prompt rows of the two baselines on 2 prompts: known Views-PP scales, so a known ratio (plain / scaled)."
    out = []
    for s in SEEDS:
        for p in ("p0", "p1"):
            out += [dict(method="baseline", variant="baseline", seed=s, views_pp=v, prompt=p, clip_rp=conv(v, scaled))
                    for v in (4, 8, 16, 32, 64, 128, 256, 512, 1024)]
            out += [dict(method="baseline", variant="baseline_sigmoid", seed=s, views_pp=v, prompt=p,
                         clip_rp=conv(v, plain)) for v in (4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, max_plain)]
        out.append(dict(method="baseline", variant="baseline", seed=s, views_pp=1024, prompt="p9", clip_rp=0.0))
    return out


# --- the plan -------------------------------------------------------------------------------------------------

def test_decide_plan_meets_the_protocol():
    runs = plan_runs(DECIDE)
    assert runs == decide_runs(DECIDE) and len(DECIDE.seeds) >= 3 and DECIDE.n_test >= 48
    assert [r["variant"] for r in runs[:3]] == ["full"] * 3  # the pilot first
    for s in DECIDE.seeds:
        got = {r["variant"] for r in runs if r["seed"] == s}
        assert got == {"full", "sigmoid", "baseline", "baseline_sigmoid", *OTHER_VARIANTS}
    full = next(r for r in runs if r["variant"] == "full")
    other = next(r for r in runs if r["variant"] == "no_style_text")
    # every knee can be checked: the last doubling of each run is scored, and the comparison budget is on both
    assert {32, 64} <= set(full["marks"]) and {16, 32} <= set(other["marks"])
    sig = next(r for r in runs if r["variant"] == "sigmoid")
    assert sig["views_pp"] >= 2 * full["views_pp"]
    bsig = next(r for r in runs if r["variant"] == "baseline_sigmoid")
    assert bsig["n_prompts"] == DECIDE.baseline_sigmoid_prompts and bsig["views_pp"] == 4 * DECIDE.baseline_max
    steps = plan_steps(DECIDE)
    assert steps["amortised_steps"] == sum(math.ceil(r["views_pp"] * 1068 / 8) for r in runs if r["method"] == "instant3d")
    assert plan_steps(FULL)["amortised_steps"] == 34992  # the other plans are unchanged


def test_estimate_reads_the_speed_benchmark(tmp_path):
    assert step_seconds(tmp_path / "none.json")["step_s"] is None
    e = estimate_hours(DECIDE, decide_runs(DECIDE), step_seconds(tmp_path / "none.json"))
    assert e["hours"] is None and "does not exist" in e["why"]
    (tmp_path / "s.json").write_text(json.dumps(dict(threads=1, rows={"fresh/on": dict(step_ms=450.0),
                                                                      "trained/on": dict(step_ms=350.0)})))
    sp = step_seconds(tmp_path / "s.json")
    assert sp["step_s"] == pytest.approx(0.4)
    e = estimate_hours(DECIDE, decide_runs(DECIDE), sp)
    by_hand = (e["amortised_steps"] * 0.4 + e["baseline_steps"] * 0.2) / 3600
    assert e["hours"] == pytest.approx(by_hand, abs=0.06) and e["wall_hours_two_processes"] == pytest.approx(e["hours"] / 2, abs=0.06)
    assert e["hours"] < 24  # the budgets were chosen for about a day at 0.4 s; scoring adds the rest
    assert estimate_hours(DECIDE, decide_runs(DECIDE), sp, generate_s=0.2)["hours"] > e["hours"]


def test_plan_validation():
    small = dict(instant3d_max=8, ablation_budget=4, reference_budget=8, baseline_max=16)
    with pytest.raises(ValueError, match="world_version"): DecidePlan("x", 4, 4, world_version="v3", **small)
    with pytest.raises(ValueError, match="plain-sigmoid"): DecidePlan("x", 4, 4, sigmoid_max=4, **small)
    with pytest.raises(ValueError, match="baseline_sigmoid_prompts"): DecidePlan("x", 4, 4, baseline_sigmoid_prompts=9, **small)
    assert section_key(DECIDE) == "decide@v2" and section_key(FULL) == "full"


# --- the rules ------------------------------------------------------------------------------------------------

def test_knee_rule():
    pts = lambda f: [dict(views_pp=v, mean=f(v)) for v in (1, 2, 4, 8, 16, 32, 64)]
    k = knee(pts(conv), 32)
    assert k["past"] and k["change"] < 0.10
    k = knee(pts(lambda v: conv(v, 64.0)), 32)  # still rising by a third over the last doubling
    assert not k["past"] and k["change"] > 0.10 and k["next_budget"] == 64
    assert not knee(pts(conv), 128)["past"]  # not scored there
    assert not knee(pts(lambda v: 0.1 * v / 32), 32, tol=0.10)["past"]  # a straight line never has a knee


def test_pairing_separates_what_an_unpaired_test_cannot():
    a = {s: 0.30 + SEED_SHIFT[s] * 4 for s in SEEDS}
    b = {s: a[s] - 0.03 + 0.001 * s for s in SEEDS}
    assert paired_test(a, b)["sign"] == 1
    assert differs(mean_std(a.values()), mean_std(b.values())) == 0  # the seed spread swamps it unpaired
    t = paired_test({0: 1.0, 1: 2.0}, {1: 1.0, 2: 5.0})  # only seed 1 in both: one pair, no test
    assert t["n"] == 1 and t["sign"] == 0 and t["seeds"] == [1]
    assert seeds_needed(0.01, 0.1) == 3 and seeds_needed(0.07, 0.1) == 5 and seeds_needed(1.0, 0.1) is None


def test_ablation_every_branch():
    rows = make_rows(delta=dict(cross_attention_only=-0.1, constant_base=+0.1),
                     noise=dict(no_style_text={0: -0.04, 1: 0.05, 2: -0.02}), slow=("no_style_noise",))
    v = {x: ablation_verdict(rows, DECIDE, x) for x in ("cross_attention_only", "constant_base", "no_style_text",
                                                       "no_style_noise")}
    assert v["cross_attention_only"]["verdict"] == "confirmed"
    assert v["constant_base"]["verdict"] == "refuted"
    t = v["no_style_text"]
    assert t["verdict"] == "inconclusive" and "within" in t["reason"] and "seeds" in t["decide_budget"]
    n = v["no_style_noise"]  # still rising at 32: not past its knee, whatever the difference
    assert n["verdict"] == "inconclusive" and "knee" in n["reason"] and n["decide_budget"] == "no_style_noise to 64 Views-PP"


def test_style_noise_is_judged_on_diversity_too():
    div = dict(full=0.6, no_style_noise=0.2)
    v = ablation_verdict(make_rows(diversity=div), DECIDE, "no_style_noise")
    assert v["clip_rp"]["sign"] == 0 and v["diversity"]["sign"] == -1 and v["verdict"] == "confirmed"
    v = ablation_verdict(make_rows(diversity=dict(full=0.2, no_style_noise=0.6)), DECIDE, "no_style_noise")
    assert v["verdict"] == "refuted"
    v = ablation_verdict(make_rows(diversity=dict(full=0.4, no_style_noise=0.4)), DECIDE, "no_style_noise")
    assert v["verdict"] == "inconclusive" and v["decide_budget"]


def test_ten_x_rule():
    c = lambda scale, top: {s: [dict(views_pp=v, mean=conv(v, scale)) for v in (1, 2, 4, 8, 16, 32, 64, 128)
                                if v <= top] for s in SEEDS}
    target = 0.8 * conv(64)  # reached at 6.4 Views-PP by the scale-4 curve
    r = ten_x_claim(c(4, 64), c(64, 128), target, 128)  # 16x slower, reached at 103
    assert r["verdict"] == "confirmed" and all(p["ratio"] > 10 for p in r["per_seed"].values())
    r = ten_x_claim(c(4, 64), c(8, 128), target, 128)  # 2x slower: measured, and below 10x
    assert r["verdict"] == "refuted"
    r = ten_x_claim(c(4, 64), c(64, 32), target, 32)  # stopped at 32 = 5x: cannot show 10x
    assert r["verdict"] == "inconclusive" and "never reached" in r["reason"]
    assert r["decide_budget"].startswith("plain sigmoid to") and float(r["decide_budget"].split()[3]) > 60
    r = ten_x_claim(c(4, 64), c(1000, 128), target, 128)  # never reached within 20x: at least 20x counts
    assert r["verdict"] == "confirmed" and all(p["lower_bound"] >= 10 for p in r["per_seed"].values())


def test_sigmoid_verdicts_instant3d_and_baseline():
    rows = make_rows(sigmoid_scale=64.0)
    s = sigmoid_verdicts(rows, prompt_rows(), DECIDE)
    assert s["instant3d"]["verdict"] == "confirmed" and s["baseline"]["verdict"] == "confirmed"
    assert s["baseline"]["prompts"] == ["p0", "p1"]  # the other prompt of the scaled baseline is left out
    s = sigmoid_verdicts(make_rows(sigmoid_scale=8.0), prompt_rows(plain=32.0), DECIDE)
    assert s["instant3d"]["verdict"] == "refuted" and s["baseline"]["verdict"] == "refuted"


def test_perp_neg_every_branch():
    good = dict(perp_neg_off=(0.6, 0.9), perp_neg_fixed_1=(0.4, 0.9), perp_neg_fixed_2=(0.3, 0.9),
                perp_neg_fixed_4=(0.1, 0.5), full=(0.1, 0.9))
    noise = {v: {0: 0.0, 1: 0.01, 2: -0.01} for v in good}
    assert perp_neg_verdict(make_rows(perp=good, noise=noise), DECIDE)["verdict"] == "confirmed"
    worse = dict(good, perp_neg_fixed_2=(0.0, 0.95))  # a fixed weight has less view error
    assert perp_neg_verdict(make_rows(perp=worse), DECIDE)["verdict"] == "refuted"
    lost = make_rows(perp=good, delta=dict(perp_neg_off=0.1))  # adaptive loses CLIP-RP against off
    assert perp_neg_verdict(lost, DECIDE)["verdict"] == "refuted"
    blind = {v: (0.1, 0.2) for v in good}  # no model learned the feature
    r = perp_neg_verdict(make_rows(perp=blind), DECIDE)
    assert r["verdict"] == "inconclusive" and "front rate" in r["reason"]
    tie = dict(good, perp_neg_fixed_1=(0.1, 0.9))
    r = perp_neg_verdict(make_rows(perp=tie, noise={"perp_neg_fixed_1": {0: 0.0, 1: 0.0, 2: 0.0}}), DECIDE)
    assert r["verdict"] == "inconclusive" and "perp_neg_fixed_1" in r["reason"]


def test_amortisation_every_branch():
    assert amortisation_verdict(make_rows(baseline_scale=64.0), DECIDE)["verdict"] == "confirmed"
    r = amortisation_verdict(make_rows(baseline_scale=2.0), DECIDE)
    assert r["verdict"] == "refuted" and r["ratio"] <= 1
    r = amortisation_verdict(make_rows(baseline_scale=12.0), DECIDE)
    assert r["verdict"] == "inconclusive" and 1 < r["ratio"] < 5 and r["decide_budget"]
    slow_ref = [dict(r, clip_rp=conv(r["views_pp"], 64.0)) if r.get("variant") == "full" else r for r in make_rows()]
    r = amortisation_verdict(slow_ref, DECIDE)
    assert r["verdict"] == "inconclusive" and "knee" in r["reason"] and r["decide_budget"] == "full to 128 Views-PP"


# --- the claims table -----------------------------------------------------------------------------------------

def test_claims_table_from_rows(tmp_path):
    S = summarise_decide(make_rows(delta=dict(cross_attention_only=-0.1)), prompt_rows(), DECIDE,
                         init_gradient=dict(plain=0.2, scaled=0.24, alpha=0.5, plain_saturated=0.0, logit_std=0.1))
    json.dumps(S)  # summary.json is plain JSON
    rows = claim_rows(S)
    assert [r["key"] for r in rows] == ["amortisation", "cross_attention_only", "no_style_noise", "no_style_text",
                                        "constant_base", "sigmoid", "baseline_sigmoid", "perp_neg"]
    assert all(r["verdict"] != "inconclusive" or (r["reason"] and r["decide_budget"]) for r in rows)
    assert rows[1]["verdict"] == "confirmed" and "paired, 3 seeds" in rows[1]["measured"]
    md = tmp_path / "R.md"; md.write_text("# Results\n\nintro\n")
    table = claims_table_md(rows, "world v2", "results/decide/summary.json")
    update_claims_table(md, table); update_claims_table(md, table)
    text = md.read_text()
    assert text.startswith("# Results\n\n<!-- claims -->") and text.count("<!-- claims -->") == 1 and "intro" in text
    with pytest.raises(ValueError, match="deciding budget"):
        check_claim_row(dict(claim="x", verdict="inconclusive", reason="measured", decide_budget=None))


def test_rules_section_states_the_plan():
    e = estimate_hours(DECIDE, decide_runs(DECIDE), dict(step_s=0.4, source="benchmarks/results/speed_cpu.json"))
    md = rules_md(DECIDE, e)
    assert "<!-- decide-rules:decide@v2 -->" in md and "paired t-test" in md and "10 %" in md
    assert f"{e['hours']:,}" in md and "48 held-out test prompts" in md


def test_results_md_has_the_rules_and_the_table():
    text = (Path(__file__).parents[1] / "RESULTS.md").read_text()
    assert text.index("<!-- claims -->") < text.index("<!-- reproduce:quick -->")
    assert "<!-- decide-rules:decide@v2 -->" in text and "<!-- reproduce:decide" not in text  # no run yet


def test_run_world_version_in_training_json(teacher_dir):
    from instant3d.train import run_world_version
    from instant3d.train_config import tiny_train_config, train_preset
    assert run_world_version(tiny_train_config(teacher_dir)) == "v1"
    assert run_world_version(train_preset("animals")) is None


# --- the command line -----------------------------------------------------------------------------------------

def test_cli_decide_dry_run_and_status(tmp_path):
    r = subprocess.run([EXE, "reproduce", "--plan", "decide", "--dry-run"], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["plan"] == "decide" and d["runs"] == len(decide_runs(DECIDE))
    assert d["estimate"]["amortised_steps"] == d["amortised_steps"] and "hours" in d["estimate"]
    r = subprocess.run([EXE, "reproduce", "--decide", "--status", "--out", str(tmp_path)], capture_output=True,
                       text=True, env=ENV)
    assert r.returncode == 0, r.stderr
    assert f"0 of {len(decide_runs(DECIDE))} runs finished" in r.stdout and "estimate of the runs left" in r.stdout
    r = subprocess.run([EXE, "reproduce", "--plan", "nope", "--dry-run"], capture_output=True, text=True, env=ENV)
    assert r.returncode == 2 and "nope" in r.stderr


# --- world v4: the same plan with its models, and Perp-Neg one prompt at a time (rule 7b) ----------------------

def _planted(folder, fronts, januses):
    folder.mkdir(parents=True)
    for i, (f, j) in enumerate(zip(fronts, januses)):
        (folder / f"{i:02d}.json").write_text(json.dumps(dict(prompt=f"a smiling p{i}", rows=[
            dict(views_pp=0, front_rate=0.0, janus_rate=0.0), dict(views_pp=4096, front_rate=f, janus_rate=j)])))
    return str(folder)


def test_decide_v4_summary_has_the_per_prompt_perp_neg_claim(tmp_path):
    from instant3d.decide import DECIDE_V4
    arms = (_planted(tmp_path / "off", [1.0] * 12, [1.0] * 12), _planted(tmp_path / "fixed", [1.0] * 12, [0.67] * 12),
            _planted(tmp_path / "adaptive", [1.0] * 12, [0.0, 0.33] * 6))
    plan = replace(DECIDE_V4, planted_perp_neg=arms)
    S = summarise_decide(make_rows(), prompt_rows(), plan, world="world v4")
    assert S["perp_neg_per_prompt"]["verdict"] == "confirmed" and S["perp_neg_per_prompt"]["folders"]["off"] == arms[0]
    rows = claim_rows(S, "instant3d reproduce --plan decide-v4")
    assert [r["key"] for r in rows][-2:] == ["perp_neg", "perp_neg_per_prompt"]
    assert "adaptive - off" in rows[-1]["measured"] and "12 prompts" in rows[-1]["measured"]
    # the amortised world v2 plan has no such claim; a missing arm leaves it inconclusive with its reason
    assert "perp_neg_per_prompt" not in summarise_decide(make_rows(), prompt_rows(), DECIDE)
    gone = replace(DECIDE_V4, planted_perp_neg=(arms[0], arms[1], str(tmp_path / "none")))
    v = summarise_decide(make_rows(), prompt_rows(), gone, world="world v4")["perp_neg_per_prompt"]
    assert v["verdict"] == "inconclusive" and "not finished" in v["reason"] and v["decide_budget"]


def test_results_md_has_the_v4_rules():
    text = (Path(__file__).parents[1] / "RESULTS.md").read_text()
    assert "<!-- decide-rules:decide-v4@v4 -->" in text and "<!-- reproduce:decide-v4" not in text  # no run yet
    sec = text[text.index("<!-- decide-rules:decide-v4@v4 -->"):text.index("<!-- /decide-rules:decide-v4@v4 -->")]
    assert "6b. **Perp-Neg, one prompt at a time**" in sec and "`mini-v4`" in sec and "mini-v2" not in sec


def test_cli_decide_v4_dry_run():
    from instant3d.decide import DECIDE_V4
    r = subprocess.run([EXE, "reproduce", "--plan", "decide-v4", "--dry-run"], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["plan"] == "decide-v4" and d["runs"] == len(decide_runs(DECIDE_V4))
