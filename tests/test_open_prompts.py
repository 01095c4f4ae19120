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
