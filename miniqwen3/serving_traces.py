"""Routing from serving engines: the expert ids that vLLM and SGLang return or record, read into a `RoutingTrace`.

A served Qwen3-235B-A22B does not fit on this machine, but the engines that serve it can say which experts every
token went to. Read into a `RoutingTrace`, those ids feed the views that need nothing else (expert load, imbalance,
consecutive-token repeats: notebooks 02 and 03) and the expert-cache simulation (`miniqwen3.expert_cache`). The
engines return expert ids only: the trace's router logits, probabilities and weights are `routing.Absent`, and a
view that needs them raises `routing.RouterDataAbsent` saying so (`RoutingTrace.has_probabilities` is False).

Formats read, as the engines' own code writes them (paths in their repositories; read from the stored copies
named here, not run):

vLLM, `--enable-return-routed-experts` (`LLM(..., enable_return_routed_experts=True)` offline)
  - v0.21 (docs/training/routed_experts_replay.md, at commit 0087e005dec9): per request, `prompt_routed_experts`
    [prompt_len, num_moe_layers, top_k] at the response level and each choice's `routed_experts`
    [gen_len, num_moe_layers, top_k]; int16 numpy arrays in the Python SDK (`RequestOutput.prompt_routed_experts`,
    `CompletionOutput.routed_experts`), nested JSON lists in the OpenAI server's /v1/completions and
    /v1/chat/completions responses. Prompt positions served from the prefix cache are -1 ("cached positions marked
    with -1 sentinel"). `read_vllm_response` reads a response body (a .json file, or .jsonl with one per line),
    `read_vllm_output` a `RequestOutput` (or anything with those attributes), `read_vllm_arrays` .npy files of the
    SDK's arrays as `np.save` writes them.
  - before v0.21 (vllm/outputs.py at commit 003d3ee2, vllm/model_executor/layers/fused_moe/routed_experts_capturer.py
    at commit 00bd1493): one `CompletionOutput.routed_experts` [seq_len, num_hidden_layers, top_k] (int32 in
    the capturer) for prompt and generated tokens together, no `prompt_routed_experts`. `read_vllm_output` reads it.
  The final generated token is never fed back through the model, so a request may have one routed row less than
  it has tokens; the readers take the rows as they are.
SGLang, `--enable-return-routed-experts` (python/sglang/srt/layers/moe/routed_experts_capturer.py at commit
  d4d0fc583717, python/sglang/srt/managers/detokenizer_manager.py `_extract_routed_experts`): the /generate response's
  `meta_info["routed_experts"]` is `base64(tensor.numpy().tobytes())` of the int32 host buffer rows
  [seq_len - 1, num_hidden_layers, top_k], flat (the capturer file's own `extract_routed_experts_from_meta_info`
  decodes it with `np.frombuffer(..., dtype=np.int32)`); `read_sglang_response` reshapes it with the model's config.
SGLang, expert distribution recorder in `per_token` mode (`--expert-distribution-recorder-mode per_token`, dumped by
  /dump_expert_distribution_record; python/sglang/srt/eplb/expert_distribution.py at commit 02295fe5ac5c):
  `torch.save(dict(records=[...], last_physical_to_logical_map=Tensor[num_layers, num_physical_experts]))` into
  `expert_distribution_recorder_{time}_{rank}.pt`; each record is one forward pass: `forward_pass_id`, `rank`,
  `gatherer_key`, `input_ids`, `positions`, `extend_seq_lens`, `forward_mode`, `topk_ids_of_layer` int32
  [num_layers, num_tokens, 8] (8 columns whatever the model's top-k, unused ones -1; physical expert ids),
  `misc_objects`, `global_physical_count`. `read_sglang_distribution` maps physical to logical ids with the map and
  keeps one `RouterRecord` per forward pass and layer (tokens in the order the engine batched them; the recorder
  does not say which request a token belongs to). The file is a pickle inside a zip, readable only by torch:
  it is read with `torch.load(weights_only=True)` when torch is installed; otherwise `ServingTraceError` says to
  install torch. Nothing else here needs torch.

Every reader takes the served model's config (`miniqwen3.config.shipped_configs()["Qwen3-235B-A22B"]`, or
`model.config`) and checks against it: the number of layers (the MoE layers, or all layers where the format has one
row per layer), top_k, and that every id is below num_experts; a file of another kind, a wrong shape or a wrong
layer count raises `ServingTraceError` naming the file and what was expected.
"""
from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import Qwen3Config
from .routing import Absent, RouterRecord, RoutingTrace

NOT_RECORDED = -1   # vLLM's mark for prefix-cached prompt positions, SGLang's for unused top-k columns


class ServingTraceError(ValueError):
    """A serving engine's routing output that cannot be read: not that format, or not this model's shape."""


@dataclass
class ServedRequest:
    """One request's routing as an engine returned it, before it goes into a trace."""
    name: str
    experts: np.ndarray            # [T, L, K] expert ids, L = the model's MoE layers
    token_ids: np.ndarray          # [T] (-1 where the source does not give them)
    positions: np.ndarray          # [T]
    not_recorded: int = 0          # rows the engine marked -1 (prefix-cached), left out of `experts`


def _absent(source: str) -> dict:
    why = f"{source} returns the chosen expert ids only"
    return {"logits": Absent("logits", why), "probs": Absent("probabilities", why),
            "weights": Absent("weights", why)}


def check_experts(experts, config: Qwen3Config, where: str) -> tuple[np.ndarray, int]:
    """An engine's [T, L, K] expert ids as [T, len(moe_layers), K] int64, and how many rows were -1 (dropped).
    L may be the number of MoE layers or, in the formats with a row per decoder layer, num_hidden_layers."""
    a = np.asarray(experts)
    if a.ndim != 3:
        raise ServingTraceError(f"{where}: expected expert ids [tokens, layers, top_k], got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise ServingTraceError(f"{where}: expected integer expert ids, got dtype {a.dtype}")
    T, L, K = a.shape
    moe = config.moe_layers
    if L == len(moe):
        pass
    elif L == config.num_hidden_layers:
        a = a[:, moe]
    else:
        raise ServingTraceError(f"{where}: {L} layers, but the model has {len(moe)} MoE layers "
                                f"({config.num_hidden_layers} decoder layers)")
    if K != config.num_experts_per_tok:
        raise ServingTraceError(f"{where}: top_k {K}, but the model chooses {config.num_experts_per_tok} experts")
    a = a.astype(np.int64)
    missing = (a == NOT_RECORDED).all(axis=(1, 2))
    partly = (a == NOT_RECORDED).any(axis=(1, 2)) & ~missing
    if partly.any():
        raise ServingTraceError(f"{where}: token {int(np.flatnonzero(partly)[0])} is -1 (not recorded) in some "
                                "layers or slots but not all")
    a = a[~missing]
    bad = (a < 0) | (a >= config.num_experts)
    if bad.any():
        t = int(np.argwhere(bad)[0][0])
        raise ServingTraceError(f"{where}: expert id {int(a[bad][0])} (token {t}) is outside 0..{config.num_experts - 1}")
    return a, int(missing.sum())


def requests_trace(requests: list[ServedRequest], config: Qwen3Config, source: str) -> RoutingTrace:
    """A `RoutingTrace` with one `RouterRecord` per request and MoE layer, expert ids only."""
    trace = RoutingTrace(n_experts=config.num_experts, source=source)
    for req in requests:
        for j, layer in enumerate(config.moe_layers):
            trace.record(RouterRecord(layer, req.positions, req.token_ids, experts=req.experts[:, j],
                                      **_absent(source)))
    return trace


def _request(name, experts, config, where, token_ids=None, first_position=0) -> ServedRequest:
    a, missing = check_experts(experts, config, where)
    T = len(np.asarray(experts))
    ids = np.full(T, -1, np.int64) if token_ids is None else np.asarray(token_ids, np.int64)[:T]
    if len(ids) < T:
        raise ServingTraceError(f"{where}: {T} routed tokens but only {len(ids)} token ids")
    keep = ~(np.asarray(experts) == NOT_RECORDED).all(axis=(1, 2)) if T else np.zeros(0, bool)
    positions = np.arange(first_position, first_position + T)
    return ServedRequest(name, a, ids[keep], positions[keep], missing)


# --- vLLM ----------------------------------------------------------------------------------------

def vllm_requests(response: dict, config: Qwen3Config, where: str = "response") -> list[ServedRequest]:
    """The requests of one vLLM OpenAI-server response body (v0.21: `prompt_routed_experts` + each choice's
    `routed_experts`): one `ServedRequest` per choice, prompt rows first."""
    if not isinstance(response, dict) or "choices" not in response:
        raise ServingTraceError(f"{where}: not a vLLM completions response (no 'choices')")
    prompt = response.get("prompt_routed_experts")
    if prompt is None and not any(isinstance(c, dict) and c.get("routed_experts") is not None
                                  for c in response["choices"]):
        raise ServingTraceError(f"{where}: no routed experts in this response (was the server started with "
                                "--enable-return-routed-experts?)")
    prompt_ids = response.get("prompt_token_ids")
    out = []
    for i, choice in enumerate(response["choices"]):
        gen = choice.get("routed_experts")
        parts = [np.asarray(p, np.int64).reshape(-1, *np.shape(p)[1:]) for p in (prompt, gen) if p is not None]
        if not parts:
            continue
        if len({p.shape[1:] for p in parts}) > 1:
            raise ServingTraceError(f"{where}: prompt and choice {i} routing differ in [layers, top_k]: "
                                    f"{[p.shape[1:] for p in parts]}")
        experts = np.concatenate(parts)
        ids = None
        if prompt_ids is not None and choice.get("token_ids") is not None:
            ids = list(prompt_ids if prompt is not None else []) + list(choice["token_ids"] if gen is not None else [])
        out.append(_request(f"{response.get('id', where)}/{choice.get('index', i)}", experts, config,
                            f"{where} choice {i}", ids))
    return out


def read_vllm_response(source, config: Qwen3Config) -> RoutingTrace:
    """vLLM OpenAI-server response bodies with routed experts: a dict, a .json file holding one (or a list of
    them), or a .jsonl file with one per line."""
    where = "response"
    if isinstance(source, dict):
        bodies = [source]
    else:
        path, where = Path(source), str(source)
        text = _read_text(path)
        try:
            if path.suffix == ".jsonl":
                bodies = [json.loads(line) for line in text.splitlines() if line.strip()]
            else:
                body = json.loads(text)
                bodies = body if isinstance(body, list) else [body]
        except json.JSONDecodeError as e:
            raise ServingTraceError(f"{path}: not JSON ({e}); expected vLLM response bodies") from None
    requests = [r for n, b in enumerate(bodies) for r in vllm_requests(b, config, f"{where}[{n}]")]
    return requests_trace(requests, config, "vLLM (--enable-return-routed-experts)")


def read_vllm_output(outputs, config: Qwen3Config) -> RoutingTrace:
    """vLLM Python-SDK results (`RequestOutput`s, or objects with the same attributes): v0.21's
    `prompt_routed_experts` + `outputs[i].routed_experts`, or the earlier single `outputs[i].routed_experts`
    over prompt and generated tokens."""
    requests = []
    for n, out in enumerate(outputs if isinstance(outputs, (list, tuple)) else [outputs]):
        prompt = getattr(out, "prompt_routed_experts", None)
        for i, completion in enumerate(getattr(out, "outputs", [])):
            gen = getattr(completion, "routed_experts", None)
            parts = [np.asarray(p) for p in (prompt, gen) if p is not None]
            if not parts:
                continue
            ids = None                  # both formats: prompt tokens, then generated ones
            if getattr(out, "prompt_token_ids", None) is not None and getattr(completion, "token_ids", None) is not None:
                ids = list(out.prompt_token_ids) + list(completion.token_ids)
            requests.append(_request(f"{getattr(out, 'request_id', n)}/{i}", np.concatenate(parts), config,
                                     f"output {n} completion {i}", ids))
    if not requests:
        raise ServingTraceError("no routed experts in these outputs (was the engine created with "
                                "enable_return_routed_experts=True?)")
    return requests_trace(requests, config, "vLLM (enable_return_routed_experts)")


def read_vllm_arrays(paths, config: Qwen3Config) -> RoutingTrace:
    """.npy files, each one request's routed experts [T, L, K] as the SDK hands them out (np.save of the array)."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    requests = []
    for p in paths:
        try:
            a = np.load(p, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise ServingTraceError(f"{p}: not a .npy array of expert ids ({e})") from None
        if not isinstance(a, np.ndarray):
            raise ServingTraceError(f"{p}: expected one .npy array [tokens, layers, top_k], got an archive")
        requests.append(_request(Path(p).stem, a, config, str(p)))
    return requests_trace(requests, config, "vLLM (enable_return_routed_experts)")


def to_vllm_response(prompt_experts, gen_experts, prompt_token_ids=None, token_ids=None,
                     model: str = "miniqwen3", request_id: str = "cmpl-0") -> dict:
    """A /v1/completions response body carrying routed experts the way vLLM v0.21 lays it out (the fields this
    module reads; text, logprobs and usage as in any response). For writing a synthetic file: experts [T, L, K]."""
    prompt_experts, gen_experts = np.asarray(prompt_experts, np.int16), np.asarray(gen_experts, np.int16)
    return {"id": request_id, "object": "text_completion", "model": model,
            "choices": [{"index": 0, "text": "", "logprobs": None, "finish_reason": "length", "stop_reason": None,
                         "token_ids": None if token_ids is None else [int(t) for t in token_ids],
                         "routed_experts": gen_experts.tolist()}],
            "usage": {"prompt_tokens": len(prompt_experts), "completion_tokens": len(gen_experts),
                      "total_tokens": len(prompt_experts) + len(gen_experts)},
            "prompt_token_ids": None if prompt_token_ids is None else [int(t) for t in prompt_token_ids],
            "prompt_routed_experts": prompt_experts.tolist()}


# --- SGLang --------------------------------------------------------------------------------------

def sglang_experts(encoded: str, config: Qwen3Config, where: str = "meta_info") -> np.ndarray:
    """SGLang's base64 routed experts (int32 rows [T, num_hidden_layers, top_k], flat) -> [T, L, K] int32."""
    try:
        raw = base64.b64decode(encoded.encode("utf-8"), validate=True)
    except (binascii.Error, AttributeError, ValueError) as e:
        raise ServingTraceError(f"{where}: routed_experts is not base64 ({e})") from None
    row = config.num_hidden_layers * config.num_experts_per_tok
    if len(raw) % (4 * row):
        raise ServingTraceError(f"{where}: {len(raw)} bytes is not a whole number of int32 rows of "
                                f"{config.num_hidden_layers} layers x top_k {config.num_experts_per_tok}: "
                                "another model's routing?")
    return np.frombuffer(raw, "<i4").reshape(-1, config.num_hidden_layers, config.num_experts_per_tok)


def read_sglang_response(source, config: Qwen3Config) -> RoutingTrace:
    """SGLang /generate response bodies with `meta_info.routed_experts`: a dict, a list of them, or a .json /
    .jsonl file of them."""
    where = "response"
    if isinstance(source, (dict, list)):
        bodies = source if isinstance(source, list) else [source]
    else:
        path, where = Path(source), str(source)
        text = _read_text(path)
        try:
            bodies = [json.loads(line) for line in text.splitlines() if line.strip()] if path.suffix == ".jsonl" \
                else json.loads(text)
        except json.JSONDecodeError as e:
            raise ServingTraceError(f"{path}: not JSON ({e}); expected SGLang /generate responses") from None
        bodies = bodies if isinstance(bodies, list) else [bodies]
    requests = []
    for n, body in enumerate(bodies):
        meta = body.get("meta_info") if isinstance(body, dict) else None
        if not isinstance(meta, dict) or meta.get("routed_experts") is None:
            raise ServingTraceError(f"{where}[{n}]: no meta_info.routed_experts (not an SGLang /generate response, "
                                    "or the server was not started with --enable-return-routed-experts)")
        experts = sglang_experts(meta["routed_experts"], config, f"{where}[{n}]")
        requests.append(_request(str(meta.get("id", n)), experts, config, f"{where}[{n}]"))
    return requests_trace(requests, config, "SGLang (--enable-return-routed-experts)")


def read_sglang_distribution(path, config: Qwen3Config) -> RoutingTrace:
    """An SGLang expert-distribution dump in per_token mode (torch.save; read with torch, see the module)."""
    path = Path(path)
    try:
        import torch
    except ImportError:
        raise ServingTraceError(f"{path}: SGLang writes this file with torch.save (a pickle in a zip); reading it "
                                "needs torch: pip install torch") from None
    if not path.is_file():
        raise ServingTraceError(f"{path}: no such file")
    try:
        dump = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:      # torch raises many kinds (pickle, zip, unsupported global)
        raise ServingTraceError(f"{path}: not a torch.save file torch can read safely ({type(e).__name__}: "
                                f"{str(e)[:200]})") from None
    if not isinstance(dump, dict) or "records" not in dump:
        raise ServingTraceError(f"{path}: not an SGLang expert distribution dump (expected a dict with 'records')")
    records = dump["records"]
    if records and "topk_ids_of_layer" not in records[0]:
        raise ServingTraceError(f"{path}: records without 'topk_ids_of_layer': a dump in 'stat' mode, not "
                                "per_token (--expert-distribution-recorder-mode per_token)")
    to_logical = dump.get("last_physical_to_logical_map")
    to_logical = None if to_logical is None else np.asarray(to_logical.numpy(), np.int64)
    K = config.num_experts_per_tok
    requests = []
    for n, rec in enumerate(records):
        where = f"{path} record {n}"
        ids = np.asarray(rec["topk_ids_of_layer"].numpy(), np.int64)       # [L, T, 8] physical ids
        if ids.ndim != 3:
            raise ServingTraceError(f"{where}: topk_ids_of_layer has shape {ids.shape}, expected [layers, tokens, 8]")
        used = (ids != NOT_RECORDED).any(axis=(0, 1))
        if ids.shape[2] < K or used[K:].any():
            raise ServingTraceError(f"{where}: {int(used.sum())} of {ids.shape[2]} top-k columns used, but the "
                                    f"model chooses {K} experts")
        ids = ids[:, :, :K]
        if to_logical is not None:
            if to_logical.shape[0] != ids.shape[0]:
                raise ServingTraceError(f"{where}: the physical-to-logical map has {to_logical.shape[0]} layers, "
                                        f"the record {ids.shape[0]}")
            if (ids >= to_logical.shape[1]).any():
                raise ServingTraceError(f"{where}: a physical expert id beyond the map's {to_logical.shape[1]}")
            layer = np.arange(ids.shape[0])[:, None, None]
            ids = np.where(ids == NOT_RECORDED, NOT_RECORDED, to_logical[layer, np.maximum(ids, 0)])
        req = _request(f"pass {rec.get('forward_pass_id', n)} rank {rec.get('rank', 0)}", ids.transpose(1, 0, 2),
                       config, where, rec.get("input_ids"))
        positions = np.asarray(rec.get("positions", req.positions), np.int64)
        if len(positions) == len(req.positions) + req.not_recorded:
            keep = ~(ids.transpose(1, 0, 2) == NOT_RECORDED).all(axis=(1, 2))
            req.positions = positions[keep]
        requests.append(req)
    return requests_trace(requests, config, "SGLang expert distribution recorder (per_token)")


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise ServingTraceError(f"{path}: no such file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ServingTraceError(f"{path}: not a text file; expected JSON response bodies") from None
