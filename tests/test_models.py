import pytest
import torch

from xsteer.core.models import (
    ModelSpecError,
    check_gguf,
    default_dtype,
    dtype_tag,
    encode,
    load_model,
    parse_spec,
    prepare_tokenizer,
)
from xsteer.errors import InputError


def test_parse_spec_kinds(tmp_path):
    assert parse_spec("smollm2-135m").kind == "zoo"
    assert parse_spec("Qwen/Qwen3-0.6B").kind == "hub"
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert parse_spec(str(tmp_path / "m")).kind == "local"
    (tmp_path / "x.gguf").write_bytes(b"GGUF")
    assert parse_spec(str(tmp_path / "x.gguf")).kind == "gguf"


@pytest.mark.parametrize("spec", ["nosuch-model", "a/b/c", "./missing.gguf", "/no/such/dir/model.gguf"])
def test_unknown_spec_is_one_clear_error(spec):
    with pytest.raises(ModelSpecError, match="a model spec is a zoo name"):
        load_model(spec)


def test_directory_without_config(tmp_path):
    with pytest.raises(ModelSpecError, match="without config.json"):
        parse_spec(str(tmp_path))


def test_gguf_that_is_not_a_model(tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelSpecError, match="not a GGUF file"):
        load_model(str(junk))
    # A valid GGUF container holding a llama.cpp control vector, not a language model.
    import gguf

    cv = tmp_path / "control.gguf"
    w = gguf.GGUFWriter(str(cv), "controlvector")
    w.add_uint32("controlvector.layer_count", 1)
    w.add_tensor("direction.1", torch.ones(8).numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ModelSpecError, match="not a language model"):
        check_gguf(cv)


def test_a_gguf_is_parsed_when_converted_not_on_every_load(tmp_path, monkeypatch):
    """Parsing a GGUF took ~20 s of each Gemma-3 load: a file whose conversion is cached loads from the cache
    without being read again, and a changed file (another cache key) is checked before it is converted."""
    import os

    from conftest import tiny_hf

    from xsteer.core.models import load as load_mod

    monkeypatch.setenv("XSTEER_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF" + b"\x00" * 60)  # the magic, then nothing a GGUF reader can parse
    converted = load_mod.cache_dir() / "hf" / load_mod._gguf_cache_key(f, parse_spec(str(f)))
    hf, tok = tiny_hf("qwen2", d_model=32, n_layers=2)
    hf.save_pretrained(converted)
    tok.save_pretrained(converted)
    assert load_model(str(f), device="cpu").cfg.n_layers == 2
    os.utime(f, ns=(1, 1))  # another mtime: no cached conversion for this file
    with pytest.raises(ModelSpecError, match="not a readable GGUF"):
        load_model(str(f), device="cpu")


def test_local_directory_loads_offline(tmp_path):
    from conftest import tiny_hf

    hf, tok = tiny_hf("qwen2", d_model=32, n_layers=2)
    hf.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    model = load_model(str(tmp_path), device="cpu")
    assert model.cfg.n_layers == 2 and model.cfg.d_model == 32
    assert model.cfg.model_name == tmp_path.name
    assert model.tokenizer.padding_side == "left"


def test_encode_adds_bos_once(tiny):
    tok = prepare_tokenizer(tiny.tokenizer)
    ids = encode(tok, ["<s>hello", "hello"]).input_ids
    assert (ids == tok.bos_token_id).sum(dim=1).tolist() == [1, 1]


def test_native_attention_matches_bridge_and_restores(tiny):
    from xsteer.core.models import native_attention

    enc = tiny.tokenizer(["hello world, a longer text", "hi"], return_tensors="pt", padding=True)
    fired = []
    hooks = [
        ("blocks.1.hook_resid_post", lambda x, hook: fired.append("resid") or x),
        ("blocks.1.attn.hook_pattern", lambda x, hook: fired.append("pattern") or x),
    ]
    with torch.inference_mode(), tiny.hooks(fwd_hooks=hooks):
        bridge = tiny(enc.input_ids, attention_mask=enc.attention_mask)
        with native_attention(tiny):
            native = tiny(enc.input_ids, attention_mask=enc.attention_mask)
        again = tiny(enc.input_ids, attention_mask=enc.attention_mask)
    real = enc.attention_mask.bool()  # padded positions may differ; nothing reads them
    torch.testing.assert_close(native[real], bridge[real], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(again, bridge)
    assert fired == ["pattern", "resid", "resid", "pattern", "resid"]  # residual hooks fire either way
    assert tiny.original_model.config._attn_implementation == "eager"


def test_zoo_files_are_checked_by_their_whole_sha256(tmp_path):
    """#15.0: a hash that matches at both ends but not in the middle is refused (the old check compared a
    prefix and a suffix), and a verified file is remembered, not rehashed."""
    import hashlib

    from xsteer.core.models.zoo import verified

    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    real = hashlib.sha256(f.read_bytes()).hexdigest()
    middle = real[:32] + ("0" if real[32] != "0" else "1") + real[33:]
    with pytest.raises(ModelSpecError, match="expected " + middle):
        verified(f, middle, tmp_path / "cache")
    assert verified(f, real, tmp_path / "cache") == f
    assert (tmp_path / "cache" / "verified").is_dir() and len(
        list((tmp_path / "cache" / "verified").iterdir())
    ) == 1


def test_xsteer_dtype_sets_the_load_dtype_and_a_bad_one_is_one_line(monkeypatch):
    monkeypatch.delenv("XSTEER_DTYPE", raising=False)
    assert default_dtype("cpu") == torch.float32 and dtype_tag(default_dtype("cpu")) is None
    monkeypatch.setenv("XSTEER_DTYPE", "bfloat16")
    assert default_dtype("cpu") == torch.bfloat16 and dtype_tag(default_dtype("cpu")) == "bfloat16"
    monkeypatch.setenv("XSTEER_DTYPE", "bf16")
    with pytest.raises(InputError, match=r"XSTEER_DTYPE='bf16' .* options: float32, bfloat16, float16"):
        default_dtype("cpu")


def test_a_local_model_loads_in_the_dtype_xsteer_dtype_names(tmp_path, monkeypatch):
    from conftest import tiny_hf

    hf, tok = tiny_hf("qwen2", d_model=32, n_layers=2)
    hf.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    monkeypatch.setenv("XSTEER_DTYPE", "bfloat16")
    model = load_model(str(tmp_path), device="cpu")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
