"""Experts offloaded to the file (miniqwen3/offload.py): the logits do not change (to float rounding: the experts'
outputs are added up in slot order, not expert order), the LRU's hits and misses are the
simulator's (expert_cache.simulate) on the same steps, GGUF experts are read from the file's bytes."""
from pathlib import Path

import numpy as np
import pytest

import miniqwen3
from miniqwen3 import expert_cache
from miniqwen3.routing import RoutingTrace
from miniqwen3.weights import file_range

FIXTURES = Path(__file__).parent / "fixtures" / "gguf"


@pytest.fixture(scope="module")
def tiny():
    return miniqwen3.load()


def prompt_ids(model, text="What is 457 + 385? Think it through. The quick brown fox jumps over the lazy dog."):
    return np.asarray(model.tokenizer.encode(text))


def decode_logits(model, ids, trace=None):
    """The prompt's first token as a forward call of its own, then one forward call a token: [T, V]."""
    cache = model.new_cache()
    return np.concatenate([model.forward(ids[t:t + 1], cache, trace=trace) for t in range(len(ids))])


def test_prefill_and_decode_logits_unchanged(tiny):
    ids = prompt_ids(tiny)
    plain = tiny.forward(ids)
    plain_decode = decode_logits(tiny, ids[:12])
    c = tiny.config
    try:
        caches = tiny.offload_experts(c.num_experts_per_tok + 2)
        offloaded = tiny.forward(ids)      # the prompt's tokens need more experts than the slots: several groups
        assert max(len(caches[0].stats.hits), 0) > 1
        np.testing.assert_allclose(offloaded, plain, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(decode_logits(tiny, ids[:12]), plain_decode, rtol=1e-5, atol=1e-5)
    finally:
        tiny.offload_experts(None)


@pytest.mark.parametrize("capacity", [8, 12, 20])
def test_lru_counts_are_the_simulators(tiny, capacity):
    """Token by token, each forward call is one step of K experts a layer: the slots' hits and misses must be
    expert_cache.simulate's LRU on the steps the routing trace recorded."""
    ids = prompt_ids(tiny)
    trace = RoutingTrace()
    try:
        caches = tiny.offload_experts(capacity)
        decode_logits(tiny, ids, trace)
        for layer, cache in zip(trace.layers, caches):
            sim = expert_cache.simulate(expert_cache.steps(trace, layer), capacity, "lru")
            np.testing.assert_array_equal(cache.stats.hits, sim.hits)
            np.testing.assert_array_equal(cache.stats.misses, sim.misses)
            assert cache.stats.bytes_read == sim.misses.sum() * cache.expert_bytes
            # the slots hold exactly the experts the bookkeeping says, as stored
            g = tiny.weights.layers[layer].mlp
            for slot, e in enumerate(cache.expert_of_slot):
                if e >= 0:
                    np.testing.assert_array_equal(cache.matrices[0].slots[slot], g.gate_proj[e])
                    np.testing.assert_array_equal(cache.matrices[2].slots[slot], g.down_proj[e])
    finally:
        tiny.offload_experts(None)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_gguf_experts_read_from_the_file(backend):
    path = FIXTURES / "moe-Q8_0.gguf"
    model = miniqwen3.load(str(path), backend=backend)
    ids = np.arange(3, 40) % model.config.vocab_size
    plain = model.forward(ids)
    plain_decode = decode_logits(model, ids[:6])
    caches = model.offload_experts(model.config.num_experts_per_tok)
    g = model.weights.layers[0].mlp
    where = caches[0].matrices[0].where
    assert where is not None and where[0].resolve() == path.resolve()
    # closed form: the offset is where gguf's reader says the tensor's data starts
    from miniqwen3.gguf_file import GGUFFile
    t, _ = GGUFFile(path).tensors["blk.0.ffn_gate_exps.weight"]
    assert where[1] == int(t.data_offset)
    np.testing.assert_allclose(model.forward(ids), plain, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(decode_logits(model, ids[:6]), plain_decode, rtol=1e-5, atol=1e-5)
    stats = caches[0].stats
    assert sum(stats.misses) > 0 and stats.bytes_read == sum(stats.misses) * caches[0].expert_bytes
    for slot, e in enumerate(caches[0].expert_of_slot):
        np.testing.assert_array_equal(caches[0].matrices[1].slots.data[slot], g.up_proj.data[e])
    for c in caches:
        c.close()


def test_file_range_of_a_memmap_view(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(bytes(range(256)) * 16)
    m = np.memmap(f, dtype=np.uint8, mode="r", offset=100, shape=(3000,)).reshape(30, 100)
    path, offset = file_range(m[7])
    assert path == f and offset == 100 + 700
    assert file_range(np.zeros(4)) is None


def test_bad_capacity(tiny):
    c = tiny.config
    with pytest.raises(ValueError, match="needs"):
        tiny.offload_experts(c.num_experts_per_tok - 1)
    with pytest.raises(ValueError, match="layer has"):
        tiny.offload_experts(c.num_experts + 1)
    assert tiny.offloaded == {}
    caches = tiny.offload_experts(4)
    assert list(tiny.offloaded) == tiny.config.moe_layers and list(tiny.offloaded.values()) == caches
    with pytest.raises(ValueError, match="needs"):
        tiny.offload_experts(1)
    assert list(tiny.offloaded.values()) == caches          # a refused capacity leaves the caches as they were
    tiny.offload_experts(None)
    assert tiny.offloaded == {}


def test_dense_model_has_nothing_to_offload():
    model = miniqwen3.load(str(FIXTURES / "dense-Q8_0.gguf"), backend="numpy")
    with pytest.raises(ValueError, match="no MoE layers"):
        model.offload_experts(2)


def test_cli_generate_with_an_expert_cache(capsys):
    """`--expert-cache C` gives the same greedy text as the whole model in memory."""
    from miniqwen3.cli import main
    path = str(FIXTURES / "moe-Q8_0.gguf")
    common = ["generate", path, "hello experts", "--no-think", "--max-new-tokens", "6", "--temperature", "0",
              "--backend", "numpy"]
    assert main(common) == 0
    whole = capsys.readouterr().out
    assert main(common + ["--expert-cache", "3"]) == 0
    assert capsys.readouterr().out == whole and whole.strip()
    assert main(["route", path, "--text", "hello", "--expert-cache", "2", "--backend", "numpy"]) == 0
    assert "layer  1:" in capsys.readouterr().out
