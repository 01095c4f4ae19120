"Open-attribute prompts of the mini world and the diversity measure across seeds (mini.world, mini.analysis)."
import pytest, torch
from instant3d.mini.world import (COLOURS, HATS, HAT_COLOURS, OPEN_SLOTS, SUPPORTS, WORLD_WORDS, Scene, WorldConfig, open_caption,
                                  open_fills, open_prompts, parse_prompt, prompts, world_words)
from instant3d.mini.analysis import diversity, expected_diversity, gt_diversity, label_fills, open_slot_fields

def test_open_prompts_leave_the_closed_grammar_alone():
    w = WorldConfig.mini()
    op = open_prompts(w)
    assert len(prompts(w)) == 1620 and not set(op) & set(prompts(w))
    tr, te = open_prompts(w, "train"), open_prompts(w, "test")
    assert set(tr) | set(te) == set(op) and not set(tr) & set(te) and abs(len(tr) / len(op) - 0.6) < 0.01
    assert open_prompts(w, "test") == te and open_prompts(WorldConfig.mini("v2")) == op  # seeded, version-independent
    with pytest.raises(ValueError, match="split='dev'"): open_prompts(w, "dev")

def test_ground_truth_is_the_grammars_choices():
    op = open_prompts(WorldConfig.mini())
    hats = op["a red cube wearing a hat"]
    assert {(s.hat, s.hat_colour) for s in hats} == {(h, c) for h in HATS for c in HAT_COLOURS} and len(hats) == 8
    assert {s.colour for s in op["a cube"]} == set(COLOURS) and all(s.body == "cube" and s.hat is None for s in op["a cube"])
    assert {s.support for s in op["a red cube sitting on something"]} == set(SUPPORTS)
    assert len(op["a cube sitting on something and wearing a hat"]) == len(COLOURS) * len(SUPPORTS) * 8
    for p, fills in list(op.items())[::97]:
        assert open_fills(p) == fills and len(set(fills)) == len(fills) >= 2 and open_slot_fields(fills)

def test_open_caption_and_fills_errors():
    s = Scene("red", "cube", "basket", None, "top hat", "blue")
    assert open_caption(s, ("hat",)) == "a red cube sitting in a basket and wearing a hat"
    assert open_caption(s, ("colour", "support")) == "a cube sitting on something and wearing a blue top hat"
    with pytest.raises(ValueError, match="has no hat"): open_caption(Scene("red", "cube"), ("hat",))
    with pytest.raises(ValueError, match="has no support"): open_caption(Scene("red", "cube"), ("support",))
    with pytest.raises(ValueError, match="subset of"): open_caption(s, ("shape",))
    assert open_fills("a red cube") == (parse_prompt("a red cube"),)
    with pytest.raises(ValueError, match="neither a caption nor an open prompt"): open_fills("a cube wearing a crown")

def test_world_words_add_something_only_in_v2():
    assert world_words(WorldConfig.mini()) == WORLD_WORDS and "something" not in WORLD_WORDS
    assert world_words(WorldConfig.mini("v2")) == WORLD_WORDS + ("something",)
    words = set(world_words(WorldConfig.mini("v2")))
    assert all(set(p.split()) <= words for p in open_prompts(WorldConfig.mini()))

def test_diversity_measure():
    fills = open_fills("a red cube wearing a hat")
    assert open_slot_fields(fills) == ("hat", "hat_colour")
    assert abs(expected_diversity(8, 8) - 0.6564) < 1e-3 and expected_diversity(1, 5) == 0.2
    same = lambda im, caps: torch.zeros(len(im), len(caps)).index_fill_(1, torch.tensor([3]), 1.0)  # always fill 3
    labels = label_fills(torch.zeros(8, 3, 8, 8), fills, same)
    assert labels == [fills[3]] * 8 and diversity(labels, ("hat", "hat_colour")) == 1 / 8  # a generator ignoring its noise
    assert diversity(list(fills), ("hat",)) == 2 / 8 and diversity(list(fills), ("hat", "hat_colour")) == 1.0

def test_gt_diversity_reports_the_truth_and_the_labeller():
    w = WorldConfig.mini()
    first = lambda im, caps: torch.zeros(len(im), len(caps)).index_fill_(1, torch.tensor([0]), 1.0)  # labels all fill 0
    d = gt_diversity("a red cube wearing a hat", w, first, n=8, seed=0)
    assert d["k"] == 8 and d["n"] == 8 and d["fields"] == ("hat", "hat_colour") and d["gt_diversity"] == 1 / 8
    assert d["drawn_diversity"] > 1 / 8 and abs(d["expected"] - expected_diversity(8, 8)) < 1e-12
    assert d == gt_diversity("a red cube wearing a hat", w, first, n=8, seed=0)  # seeded

def test_teacher_open_captions_describe_their_images():
    from instant3d.mini.teacher import TeacherConfig, batch_captions, teacher_prompts
    from instant3d.mini.world import open_cover
    cfg, g = TeacherConfig.v2(), torch.Generator().manual_seed(3)
    closed = prompts(cfg.world)
    assert teacher_prompts(TeacherConfig.mini()) == closed and TeacherConfig.mini().open_caption_prob == 0.0
    bank = teacher_prompts(cfg)
    assert bank[:len(closed)] == closed and bank[len(closed):] == open_cover(cfg.world)[0]
    p = torch.randint(0, len(closed), (3000,), generator=g)
    rows = batch_captions(p, torch.full((3000,), 2), cfg, g)
    opened = (rows > 0) & ((rows - 1) // 5 >= len(closed))
    assert abs(opened.float().mean().item() - 0.25 * 0.9) < 0.03
    for k, r in list(zip(p[opened].tolist(), rows[opened].tolist()))[:40]:
        assert parse_prompt(closed[k]) in open_fills(bank[(r - 1) // 5], cfg.world)
    # the shipped teacher's batches are drawn exactly as before: no open captions, no extra random draws
    from instant3d.mini.teacher import CaptionBank
    v, g1, g2 = torch.zeros(100, dtype=torch.long), torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    a = batch_captions(p[:100], v, TeacherConfig.mini(), g1)
    u = torch.rand(100, generator=g2)  # the draws of the formula as the shipped teacher was trained with it
    want = torch.where(u < 0.2, CaptionBank.index(p[:100]), CaptionBank.index(p[:100], v))
    assert torch.equal(a, torch.where(torch.rand(100, generator=g2) < 0.1, torch.zeros_like(want), want))

def test_tiny_v2_teacher_trains_with_open_captions_and_front_bias(tmp_path):
    "Wiring: the caption bank holds the open prompts and biased, open-caption batches train end to end."
    import dataclasses
    from instant3d.text import mini_text_encoder
    from instant3d.mini.teacher import FRONT_BIAS, TeacherConfig, load_teacher, teacher_prompts
    from instant3d.mini.teacher_train import train_teacher
    t = TeacherConfig.tiny()
    w2 = dataclasses.replace(t.world, version="v2")
    cfg = dataclasses.replace(t, world=w2, open_caption_prob=0.5, steps=4, checkpoint_every=2, log_every=2, **FRONT_BIAS)
    mini_text_encoder(max_length=24, words=world_words(w2)).save_pretrained(tmp_path / "enc")
    assert len(teacher_prompts(cfg)) == len(prompts(w2)) + len(open_prompts(w2))
    out = train_teacher(cfg, tmp_path / "enc", tmp_path / "run", progress=False)
    assert out == tmp_path / "run" / "teacher" and load_teacher(out).text_encoder.prompt_report("a cube wearing a hat")["unknown_words"] == []
