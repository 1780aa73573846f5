"""Every bad checkpoint gets one exception type, CheckpointError, naming the file and the tensor,
raised by load() before anything half-loaded is used."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import miniqwen3
from miniqwen3.weights import (Checkpoint, CheckpointError, SafetensorsFile, as_float32, float32_to_bf16,
                               save_checkpoint, save_safetensors)

GOOD = Path(__file__).parent / "fixtures" / "parity" / "dense_untied_gqa2"
SHARDED = Path(__file__).parent / "fixtures" / "parity" / "dense_sharded_keys4x"


@pytest.fixture
def ckpt(tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(GOOD, folder)
    return folder


def header_of(path):
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def write_with_header(path, header, data):
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)


def test_truncated_file(ckpt):
    f = ckpt / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor .*run past the end.*truncated"):
        miniqwen3.load(ckpt)


def test_file_shorter_than_header_length(ckpt):
    (ckpt / "model.safetensors").write_bytes(b"\x01\x02\x03")
    with pytest.raises(CheckpointError, match=r"model\.safetensors: truncated: 3 bytes"):
        miniqwen3.load(ckpt)


def test_header_length_past_end(ckpt):
    f = ckpt / "model.safetensors"
    f.write_bytes((10 ** 9).to_bytes(8, "little") + b"{}")
    with pytest.raises(CheckpointError, match=r"model\.safetensors: bad header: header length 1000000000 runs past"):
        miniqwen3.load(ckpt)


def test_header_not_json(ckpt):
    f = ckpt / "model.safetensors"
    f.write_bytes((5).to_bytes(8, "little") + b"{oops" + b"\0" * 64)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: bad header: not valid JSON"):
        miniqwen3.load(ckpt)


def test_foreign_file_is_not_mistaken_for_safetensors(ckpt):
    (ckpt / "model.safetensors").write_bytes(b"PK\x03\x04" + b"\0" * 200)   # e.g. a torch .bin zip
    with pytest.raises(CheckpointError, match="bad header"):
        miniqwen3.load(ckpt)


def test_offsets_past_the_end(ckpt):
    f = ckpt / "model.safetensors"
    header, data = header_of(f)
    header["model.norm.weight"]["data_offsets"] = [len(data) - 4, len(data) + 188]
    write_with_header(f, header, data)
    with pytest.raises(CheckpointError, match=r"tensor model\.norm\.weight: data_offsets .* run past the end"):
        miniqwen3.load(ckpt)


def test_offsets_that_disagree_with_the_shape(ckpt):
    f = ckpt / "model.safetensors"
    header, data = header_of(f)
    b, e = header["model.norm.weight"]["data_offsets"]
    header["model.norm.weight"]["data_offsets"] = [b, e - 4]
    write_with_header(f, header, data)
    with pytest.raises(CheckpointError, match=r"tensor model\.norm\.weight: 188 bytes for shape \[48\] F32, expected 192"):
        miniqwen3.load(ckpt)


def test_unsupported_dtype(ckpt):
    f = ckpt / "model.safetensors"
    header, data = header_of(f)
    header["model.norm.weight"]["dtype"] = "I32"
    write_with_header(f, header, data)
    with pytest.raises(CheckpointError, match=r"tensor model\.norm\.weight: unsupported dtype 'I32'"):
        miniqwen3.load(ckpt)


def test_missing_tensor(ckpt):
    f = ckpt / "model.safetensors"
    header, data = header_of(f)
    del header["model.layers.1.self_attn.k_norm.weight"]
    write_with_header(f, header, data)
    with pytest.raises(CheckpointError, match=r"tensor model\.layers\.1\.self_attn\.k_norm\.weight is missing \(expected shape \[24\]\)"):
        miniqwen3.load(ckpt)


def test_misshaped_tensor(ckpt):
    f = ckpt / "model.safetensors"
    header, data = header_of(f)
    header["model.layers.0.self_attn.q_proj.weight"]["shape"] = [48, 96]   # transposed; same byte count
    write_with_header(f, header, data)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor model\.layers\.0\.self_attn\.q_proj\.weight "
                                              r"has shape \[48, 96\], expected \[96, 48\]"):
        miniqwen3.load(ckpt)


def test_config_that_does_not_fit_the_weights(ckpt):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["hidden_size"] = 64
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"tensor model\.embed_tokens\.weight has shape \[160, 48\], expected \[160, 64\]"):
        miniqwen3.load(ckpt)


def test_untied_model_without_lm_head(ckpt):
    f = ckpt / "model.safetensors"
    header, data = header_of(f)
    del header["lm_head.weight"]
    write_with_header(f, header, data)
    with pytest.raises(CheckpointError, match=r"tensor lm_head\.weight is missing"):
        miniqwen3.load(ckpt)


def test_missing_shard(tmp_path):
    folder = tmp_path / "sharded"
    shutil.copytree(SHARDED, folder)
    (folder / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"index\.json: tensor .*: shard model-00002-of-00003\.safetensors is missing"):
        miniqwen3.load(folder)


def test_index_names_a_tensor_its_shard_lacks(tmp_path):
    folder = tmp_path / "sharded"
    shutil.copytree(SHARDED, folder)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.norm.weight"] = "model-00001-of-00003.safetensors"
    other = [n for n, f in index["weight_map"].items() if f != "model-00001-of-00003.safetensors"][0]
    index["weight_map"][other] = "model-00001-of-00003.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"model-00001-of-00003\.safetensors: tensor .*listed in the index but not in this shard"):
        miniqwen3.load(folder)


def test_folder_without_weights(tmp_path):
    shutil.copy(GOOD / "config.json", tmp_path / "config.json")
    with pytest.raises(CheckpointError, match="no model.safetensors or model.safetensors.index.json"):
        miniqwen3.load(tmp_path)


def test_writer_round_trip_and_bf16_rounding(tmp_path):
    x = np.array([1.0, -2.5, 3.14159265, 1e-8, 65504.0, 1.00390625], dtype=np.float32)
    bits = float32_to_bf16(x)
    # closed-form bf16 values: 8 significant bits, ties to even
    np.testing.assert_array_equal(as_float32(bits), np.array([1.0, -2.5, 3.140625, 1.0011717677116394e-08, 65536.0, 1.0],
                                                             dtype=np.float32))
    save_safetensors(tmp_path / "t.safetensors", {"a": bits.reshape(2, 3), "b": x, "c": x.astype(np.float16)})
    f = SafetensorsFile(tmp_path / "t.safetensors")
    assert {k: f.entries[k].dtype for k in f.keys()} == {"a": "BF16", "b": "F32", "c": "F16"}
    np.testing.assert_array_equal(f.get("a"), bits.reshape(2, 3))
    np.testing.assert_array_equal(f.get("b"), x)
    assert (f.entries["a"].begin % 8) == 0


def test_reader_agrees_with_the_safetensors_package(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    y = np.arange(5, dtype=np.float16)
    st.save_file({"x": x, "y": y}, str(tmp_path / "ref.safetensors"))
    f = SafetensorsFile(tmp_path / "ref.safetensors")
    np.testing.assert_array_equal(f.get("x"), x)
    np.testing.assert_array_equal(f.get("y"), y)


def test_sharded_writer_round_trip(tmp_path):
    tensors = {f"t{i}": np.full((10, 10), i, dtype=np.float32) for i in range(5)}   # 400 bytes each
    save_checkpoint(tmp_path, tensors, max_shard_bytes=900)
    assert len(list(tmp_path.glob("model-*-of-00003.safetensors"))) == 3
    ckpt = Checkpoint(tmp_path)
    for name, t in tensors.items():
        np.testing.assert_array_equal(ckpt.get(name, (10, 10)), t)


@pytest.mark.parametrize("fits", [True, False])
def test_per_token_matrices_are_read_into_memory_when_they_fit(fits, monkeypatch):
    """The matrices every token reads in full (attention, dense MLPs, an untied lm_head) are read into memory
    when `fits_in_memory` allows their total bytes, else they stay views of the memory map; an untied embedding
    is always a view. Same values either way."""
    from miniqwen3 import weights
    from miniqwen3.weights import file_range
    reference = miniqwen3.load(GOOD, backend="numpy").weights
    asked = []
    monkeypatch.setattr(weights, "fits_in_memory", lambda n: asked.append(n) or fits)
    w = miniqwen3.load(GOOD, backend="numpy").weights
    assert w.lm_head is not w.embed_tokens
    per_token = [w.lm_head] + [m for layer in w.layers for m in (
        layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj, layer.self_attn.o_proj,
        layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj)]
    assert asked == [sum(m.nbytes for m in per_token)]
    assert [file_range(m) is None for m in per_token] == [fits] * len(per_token)
    assert file_range(w.embed_tokens) is not None
    np.testing.assert_array_equal(w.lm_head, reference.lm_head)
    np.testing.assert_array_equal(w.layers[-1].mlp.down_proj, reference.layers[-1].mlp.down_proj)
