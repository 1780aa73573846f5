"""The serving-engine readers (miniqwen3/serving_traces.py) on files written the way vLLM and SGLang write them:
vLLM's OpenAI-server JSON (v0.21 field layout) and SDK arrays, SGLang's base64 meta_info and its per_token expert
distribution dump (torch.save of the recorder's dict). The ids read back must be the ids written, in the model's
MoE layers; bad input must raise ServingTraceError naming what was expected."""
import base64
import dataclasses
import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from miniqwen3 import balance
from miniqwen3.config import shipped_configs
from miniqwen3.routing import RouterDataAbsent
from miniqwen3.serving_traces import (ServingTraceError, read_sglang_distribution, read_sglang_response,
                                      read_vllm_arrays, read_vllm_output, read_vllm_response, to_vllm_response)

CONFIG = shipped_configs()["Qwen3-30B-A3B"]          # 48 MoE layers, 128 experts, top-8
L, E, K = CONFIG.num_hidden_layers, CONFIG.num_experts, CONFIG.num_experts_per_tok


def experts(T, seed, dtype=np.int16):
    """[T, L, K] distinct expert ids per token and layer, as a router's top-k gives them."""
    rng = np.random.default_rng(seed)
    return np.stack([np.stack([rng.choice(E, K, replace=False) for _ in range(L)]) for _ in range(T)]).astype(dtype)


def vllm_body(prompt, gens, prompt_ids=None, gen_ids=None):
    """A /v1/completions body as vLLM v0.21's server serialises it: nested lists (json.dumps of the pydantic model)."""
    return {"id": "cmpl-abc", "object": "text_completion", "created": 0, "model": "Qwen/Qwen3-30B-A3B",
            "choices": [{"index": i, "text": "x", "logprobs": None, "finish_reason": "length", "stop_reason": None,
                         "token_ids": None if gen_ids is None else gen_ids[i],
                         "routed_experts": None if g is None else g.tolist()} for i, g in enumerate(gens)],
            "usage": {"prompt_tokens": len(prompt), "total_tokens": 0, "completion_tokens": 0},
            "prompt_token_ids": prompt_ids, "prompt_routed_experts": None if prompt is None else prompt.tolist(),
            "kv_transfer_params": None}


def test_vllm_json_response_prompt_then_generated(tmp_path):
    prompt, gen0, gen1 = experts(5, 0), experts(3, 1), experts(2, 2)
    path = tmp_path / "resp.json"
    path.write_text(json.dumps(vllm_body(prompt, [gen0, gen1], list(range(5)), [[7, 8, 9], [5, 6]])))
    trace = read_vllm_response(path, CONFIG)
    assert trace.layers == list(range(L)) and not trace.has_probabilities and trace.n_experts == E
    recs = [r for r in trace.records if r.layer == 3]
    assert len(recs) == 2                                           # one record per choice
    np.testing.assert_array_equal(recs[0].experts, np.concatenate([prompt, gen0])[:, 3])
    np.testing.assert_array_equal(recs[1].experts, np.concatenate([prompt, gen1])[:, 3])
    np.testing.assert_array_equal(recs[0].token_ids, [0, 1, 2, 3, 4, 7, 8, 9])
    np.testing.assert_array_equal(trace.layer(47).experts, np.concatenate([prompt, gen0, prompt, gen1])[:, 47])
    counts = np.bincount(np.concatenate([prompt, gen0, prompt, gen1])[:, 0].ravel(), minlength=E)
    np.testing.assert_allclose(trace.expert_load(0), counts / counts.sum())


def test_vllm_jsonl_and_prefix_cached_rows(tmp_path):
    prompt = experts(4, 3)
    prompt[:2] = -1                                         # served from the prefix cache: -1 sentinel
    lines = [json.dumps(vllm_body(prompt, [experts(2, 4)])), json.dumps(vllm_body(experts(3, 5), [None]))]
    (tmp_path / "r.jsonl").write_text("\n".join(lines) + "\n")
    trace = read_vllm_response(tmp_path / "r.jsonl", CONFIG)
    first = [r for r in trace.records if r.layer == 0]
    assert [len(r.experts) for r in first] == [4, 3]        # 2 cached rows left out of the first request
    np.testing.assert_array_equal(first[0].positions, [2, 3, 4, 5])


def test_vllm_sdk_outputs_both_versions(tmp_path):
    prompt, gen = experts(4, 6), experts(3, 7)
    v021 = SimpleNamespace(request_id="r1", prompt_token_ids=[1, 2, 3, 4], prompt_routed_experts=prompt,
                           outputs=[SimpleNamespace(token_ids=[5, 6, 7], routed_experts=gen)])
    whole = np.concatenate([prompt, gen]).astype(np.int32)
    older = SimpleNamespace(request_id="r2", prompt_token_ids=[1, 2, 3, 4],
                            outputs=[SimpleNamespace(token_ids=[5, 6, 7], routed_experts=whole)])
    for out in (v021, older):
        trace = read_vllm_output([out], CONFIG)
        np.testing.assert_array_equal(trace.layer(10).experts, whole[:, 10])
        np.testing.assert_array_equal(trace.layer(10).token_ids, [1, 2, 3, 4, 5, 6, 7])
    np.save(tmp_path / "req0.npy", gen)
    np.testing.assert_array_equal(read_vllm_arrays(tmp_path / "req0.npy", CONFIG).layer(5).experts, gen[:, 5])


def test_probability_views_say_they_are_absent(tmp_path):
    path = tmp_path / "resp.json"
    path.write_text(json.dumps(to_vllm_response(experts(4, 8), experts(2, 9))))
    r = read_vllm_response(path, CONFIG).layer(0)
    with pytest.raises(RouterDataAbsent, match="probabilities are absent.*expert ids only"):
        balance.mean_probability(r.probs)
    with pytest.raises(RouterDataAbsent, match="weights are absent"):
        r.weights.shape
    assert balance.routed_fraction(r.experts, E).sum() == pytest.approx(K)     # ids-only views work


def test_layer_rows_of_all_decoder_layers_keep_the_moe_ones():
    config = dataclasses.replace(CONFIG, mlp_only_layers=(0, 1))               # 46 MoE layers of 48
    a = experts(3, 10)
    out = SimpleNamespace(prompt_routed_experts=None, outputs=[SimpleNamespace(routed_experts=a, token_ids=None)])
    trace = read_vllm_output(out, config)                    # 48 rows per token: one per decoder layer
    assert trace.layers == list(range(2, 48))
    np.testing.assert_array_equal(trace.layer(2).experts, a[:, 2])
    out.outputs[0].routed_experts = a[:, 2:]                # 46 rows: one per MoE layer (v0.21)
    np.testing.assert_array_equal(read_vllm_output(out, config).layer(2).experts, a[:, 2])


@pytest.mark.parametrize("bad, message", [
    (lambda a: a[:, :40], "40 layers, but the model has 48 MoE layers"),
    (lambda a: a[:, :, :4], "top_k 4, but the model chooses 8"),
    (lambda a: a[0], "expected expert ids \\[tokens, layers, top_k\\]"),
    (lambda a: np.where(a == a[1, 2, 3], 128, a), "expert id 128 .* outside 0..127"),
    (lambda a: a.astype(np.float32), "integer expert ids"),
    (lambda a: np.where(np.arange(3)[:, None, None] * np.ones_like(a) == 1, np.where(a > 60, -1, a), a),
     "-1 \\(not recorded\\) in some"),
])
def test_bad_shapes_and_ids(bad, message):
    out = SimpleNamespace(outputs=[SimpleNamespace(routed_experts=bad(experts(3, 11)), token_ids=None)])
    with pytest.raises(ServingTraceError, match=message):
        read_vllm_output(out, CONFIG)


def test_foreign_files(tmp_path):
    (tmp_path / "other.json").write_text(json.dumps({"choices": [{"text": "hi"}]}))
    with pytest.raises(ServingTraceError, match="no routed experts.*--enable-return-routed-experts"):
        read_vllm_response(tmp_path / "other.json", CONFIG)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3_moe"}))
    with pytest.raises(ServingTraceError, match="not a vLLM completions response"):
        read_vllm_response(tmp_path / "config.json", CONFIG)
    (tmp_path / "w.bin").write_bytes(b"\x00\xff" * 100)
    with pytest.raises(ServingTraceError, match="not a text file"):
        read_vllm_response(tmp_path / "w.bin", CONFIG)
    with pytest.raises(ServingTraceError, match="not a .npy array"):
        read_vllm_arrays(tmp_path / "w.bin", CONFIG)
    with pytest.raises(ServingTraceError, match="no such file"):
        read_vllm_response(tmp_path / "missing.json", CONFIG)
    with pytest.raises(ServingTraceError, match="no meta_info.routed_experts"):
        read_sglang_response(tmp_path / "config.json", CONFIG)


def sglang_body(a):
    """An SGLang /generate body: meta_info.routed_experts = base64 of the int32 host rows' bytes
    (detokenizer_manager._extract_routed_experts: pybase64.b64encode(t.numpy().tobytes()).decode('utf-8'))."""
    torch = pytest.importorskip("torch")
    t = torch.tensor(a.astype(np.int32))
    return {"text": "...", "meta_info": {"id": "abc", "prompt_tokens": 3, "completion_tokens": 3,
                                         "routed_experts": base64.b64encode(t.numpy().tobytes()).decode("utf-8")}}


def test_sglang_response(tmp_path):
    a, b = experts(5, 12), experts(2, 13)
    (tmp_path / "gen.json").write_text(json.dumps([sglang_body(a), sglang_body(b)]))
    trace = read_sglang_response(tmp_path / "gen.json", CONFIG)
    np.testing.assert_array_equal(trace.layer(7).experts, np.concatenate([a, b])[:, 7])
    other = dataclasses.replace(CONFIG, num_hidden_layers=94)            # 235B-A22B's depth: 94 x 8 per row
    with pytest.raises(ServingTraceError, match="not a whole number of int32 rows of 94 layers"):
        read_sglang_response(tmp_path / "gen.json", other)
    bad = sglang_body(a)
    bad["meta_info"]["routed_experts"] = "not base64!"
    with pytest.raises(ServingTraceError, match="not base64"):
        read_sglang_response(bad, CONFIG)


def write_distribution_dump(path, passes, physical_to_logical):
    """The recorder's per_token dump as _DetailAccumulator.dump writes it: torch.save(dict(records=[...],
    last_physical_to_logical_map=...)), topk_ids_of_layer int32 [layers, tokens, 8], unused columns -1."""
    torch = pytest.importorskip("torch")
    records = []
    for n, (ids, positions) in enumerate(passes):
        topk = torch.full((L, len(positions), 8), -1, dtype=torch.int32)
        topk[:, :, :K] = torch.tensor(ids.transpose(1, 0, 2).astype(np.int32))
        count = torch.zeros((L, physical_to_logical.shape[1]), dtype=torch.int32)
        records.append(dict(forward_pass_id=n, rank=0, gatherer_key="primary", input_ids=list(range(len(positions))),
                            positions=positions, extend_seq_lens=[len(positions)], forward_mode=1,
                            topk_ids_of_layer=topk, misc_objects=[], global_physical_count=count))
    torch.save(dict(records=records, last_physical_to_logical_map=torch.tensor(physical_to_logical)), str(path))


def test_sglang_per_token_dump_maps_physical_to_logical(tmp_path):
    rng = np.random.default_rng(14)
    P = E + 16                                            # 16 redundant physical experts (EPLB)
    to_logical = np.stack([np.concatenate([np.arange(E), rng.choice(E, 16)]) for _ in range(L)]).astype(np.int64)
    physical = [rng.integers(0, P, (4, L, K)), rng.integers(0, P, (1, L, K))]
    path = tmp_path / "expert_distribution_recorder_1.0_0.pt"
    write_distribution_dump(path, [(physical[0], [0, 1, 2, 3]), (physical[1], [4])], to_logical)
    trace = read_sglang_distribution(path, CONFIG)
    want = np.concatenate([to_logical[np.arange(L)[None, :, None], p] for p in physical])
    np.testing.assert_array_equal(trace.layer(9).experts, want[:, 9])
    np.testing.assert_array_equal(trace.layer(9).positions, [0, 1, 2, 3, 4])
    assert trace.source.startswith("SGLang expert distribution")


def test_sglang_dump_errors(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    torch.save({"logical_count": torch.zeros(3, 4), "rank": 0}, str(tmp_path / "stat.pt"))
    with pytest.raises(ServingTraceError, match="not an SGLang expert distribution dump"):
        read_sglang_distribution(tmp_path / "stat.pt", CONFIG)
    (tmp_path / "junk.pt").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ServingTraceError, match="not a torch.save file"):
        read_sglang_distribution(tmp_path / "junk.pt", CONFIG)
    small = dataclasses.replace(CONFIG, num_experts_per_tok=4)
    write_distribution_dump(tmp_path / "d.pt", [(experts(2, 15), [0, 1])], np.tile(np.arange(E), (L, 1)))
    with pytest.raises(ServingTraceError, match="8 of 8 top-k columns used, but the model chooses 4"):
        read_sglang_distribution(tmp_path / "d.pt", small)
    monkeypatch.setitem(sys.modules, "torch", None)       # as if torch were not installed
    with pytest.raises(ServingTraceError, match="needs torch: pip install torch"):
        read_sglang_distribution(tmp_path / "d.pt", CONFIG)


def test_the_vllm_path_needs_no_torch(tmp_path):
    """Imported and run with torch made unimportable: vLLM's files read; only SGLang's torch.save dump needs it."""
    import subprocess
    path = tmp_path / "resp.json"
    path.write_text(json.dumps(to_vllm_response(experts(3, 16), experts(2, 17))))
    code = ("import sys; sys.modules['torch'] = None\n"
            "from miniqwen3.config import shipped_configs\n"
            "from miniqwen3.serving_traces import read_vllm_response\n"
            f"t = read_vllm_response({str(path)!r}, shipped_configs()['Qwen3-30B-A3B'])\n"
            "print(len(t.layer(0).experts), 'torch' in sys.modules and sys.modules['torch'] is not None)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["5", "False"]


def test_a_model_trace_keeps_its_probabilities():
    from miniqwen3 import RoutingTrace
    from miniqwen3.routing import RouterRecord
    tr = RoutingTrace()
    tr.record(RouterRecord(0, np.arange(2), np.arange(2), np.zeros((2, 4)), np.full((2, 4), 0.25),
                           np.array([[0, 1], [2, 3]]), np.full((2, 2), 0.5)))
    assert tr.has_probabilities and tr.expert_load(0).tolist() == [0.25] * 4
