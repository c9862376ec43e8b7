"""What the production embedder costs before anyone downloads it: an ONNX graph of mxbai-embed-large-v1's shape.

mxbai-embed-large-v1 is a BERT-large: 24 layers, hidden 1024, 16 heads, intermediate 4096, WordPiece vocabulary
of 30522, CLS pooling, and the query prompt "Represent this sentence for searching relevant passages: ". Its
weights cannot be fetched here, so this builds a graph of exactly that shape with random weights, in the layout
a Hugging Face BERT export has (post-LayerNorm blocks, erf GELU, additive attention mask), checks it against a
numpy implementation of the same model, times it through worker.embed.Embedder as shipped (fp32) and as the
worker prepares it (worker.model_prep: dynamic int8, per channel), and measures a semantic hit end to end with
the `mxbai` profile pointed at the graph. Random weights cost the same time as real ones; a real export adds a
few small ops, so read the times as lower bounds. The tokenizer is all-MiniLM-L6-v2's: like mxbai's, BERT
WordPiece, uncased, 30522 tokens, so token counts (and hence times) match; its ids mean nothing to these weights.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.stats import pct

F32 = npt.NDArray[np.float32]
MXBAI_PROMPT = "Represent this sentence for searching relevant passages: "


@dataclass(frozen=True)
class BertShape:
    layers: int = 24
    hidden: int = 1024
    heads: int = 16
    intermediate: int = 4096
    vocab: int = 30522
    max_positions: int = 512
    type_vocab: int = 2


MXBAI = BertShape()


def random_weights(shape: BertShape, seed: int = 0) -> dict[str, F32]:
    """BERT initialization (normal, std 0.02; LayerNorm scale 1, shift 0), deterministic for a seed."""
    rng = np.random.default_rng(seed)
    h, i = shape.hidden, shape.intermediate

    def normal(*dims: int) -> F32:
        return rng.standard_normal(dims, dtype=np.float32) * np.float32(0.02)

    w = {"word": normal(shape.vocab, h), "position": normal(shape.max_positions, h),
         "token_type": normal(shape.type_vocab, h), "emb_ln_g": np.ones(h, np.float32),
         "emb_ln_b": np.zeros(h, np.float32)}  # fmt: skip
    for n in range(shape.layers):
        for name, dims in (
            ("q", (h, h)),
            ("k", (h, h)),
            ("v", (h, h)),
            ("o", (h, h)),
            ("ff1", (h, i)),
            ("ff2", (i, h)),
        ):
            w[f"l{n}.{name}.w"] = normal(*dims)
            w[f"l{n}.{name}.b"] = normal(dims[1])
        for ln in ("ln1", "ln2"):
            w[f"l{n}.{ln}.g"] = np.ones(h, np.float32)
            w[f"l{n}.{ln}.b"] = np.zeros(h, np.float32)
    return w


def build_graph(shape: BertShape, w: dict[str, F32]) -> Any:
    """An ONNX model (opset 17): input_ids, attention_mask, token_type_ids -> last_hidden_state."""
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[Any] = []
    inits: dict[str, Any] = {}
    counter = iter(range(1_000_000))

    def init(name: str, array: npt.NDArray[Any]) -> str:
        if name not in inits:
            inits[name] = numpy_helper.from_array(array, name)
        return name

    def op(op_type: str, *inputs: str, **attrs: Any) -> str:
        out = f"{op_type.lower()}_{next(counter)}"
        nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def layer_norm(x: str, g: str, b: str) -> str:
        return op("LayerNormalization", x, init(g, w[g]), init(b, w[b]), axis=-1, epsilon=1e-12)

    def linear(x: str, name: str) -> str:
        return op("Add", op("MatMul", x, init(f"{name}.w", w[f"{name}.w"])), init(f"{name}.b", w[f"{name}.b"]))

    hd = shape.hidden // shape.heads
    one_i = init("one_i64", np.array(1, np.int64))
    seq_len = op("Gather", op("Shape", "input_ids"), one_i, axis=0)
    positions = op("Range", init("zero_i64", np.array(0, np.int64)), seq_len, one_i)
    x = op("Add", op("Add", op("Gather", init("word", w["word"]), "input_ids"),
                     op("Gather", init("position", w["position"]), positions)),
           op("Gather", init("token_type", w["token_type"]), "token_type_ids"))  # fmt: skip
    x = layer_norm(x, "emb_ln_g", "emb_ln_b")
    # Additive mask: 0 where attended, -10000 on padding, broadcast over heads and query positions.
    mask = op(
        "Unsqueeze", op("Cast", "attention_mask", to=TensorProto.FLOAT), init("axes12", np.array([1, 2], np.int64))
    )
    mask = op(
        "Mul", op("Sub", init("one_f", np.array(1.0, np.float32)), mask), init("neg", np.array(-10000.0, np.float32))
    )
    split = init("split_heads", np.array([0, 0, shape.heads, hd], np.int64))
    merge = init("merge_heads", np.array([0, 0, shape.hidden], np.int64))
    scale = init("sqrt_hd", np.array(math.sqrt(hd), np.float32))
    half, one_f, sqrt2 = (
        init("half", np.array(0.5, np.float32)),
        "one_f",
        init("sqrt2", np.array(math.sqrt(2), np.float32)),
    )
    for n in range(shape.layers):
        q = op("Transpose", op("Reshape", linear(x, f"l{n}.q"), split), perm=[0, 2, 1, 3])
        k = op("Transpose", op("Reshape", linear(x, f"l{n}.k"), split), perm=[0, 2, 3, 1])
        v = op("Transpose", op("Reshape", linear(x, f"l{n}.v"), split), perm=[0, 2, 1, 3])
        probs = op("Softmax", op("Add", op("Div", op("MatMul", q, k), scale), mask), axis=-1)
        context = op("Reshape", op("Transpose", op("MatMul", probs, v), perm=[0, 2, 1, 3]), merge)
        x = layer_norm(op("Add", linear(context, f"l{n}.o"), x), f"l{n}.ln1.g", f"l{n}.ln1.b")
        f = linear(x, f"l{n}.ff1")
        gelu = op("Mul", op("Mul", f, half), op("Add", one_f, op("Erf", op("Div", f, sqrt2))))
        x = layer_norm(op("Add", linear(gelu, f"l{n}.ff2"), x), f"l{n}.ln2.g", f"l{n}.ln2.b")
    nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"]))
    inputs = [helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])
              for name in ("input_ids", "attention_mask", "token_type_ids")]  # fmt: skip
    output = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", shape.hidden])
    graph = helper.make_graph(nodes, "bert_shape", inputs, [output], initializer=list(inits.values()))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="dejavu-bench")
    model.ir_version = 9  # what onnxruntime 1.32 and onnx 1.23 both read
    return model


def _erf(x: F32) -> F32:
    # Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): numpy has no erf, and scipy is not a dependency.
    t = 1.0 / (1.0 + 0.3275911 * np.abs(x))
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    out: F32 = (np.sign(x) * (1.0 - poly * np.exp(-x * x))).astype(np.float32)
    return out


def _layer_norm(x: F32, g: F32, b: F32) -> F32:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    out: F32 = (x - mean) / np.sqrt(var + 1e-12) * g + b
    return out


def numpy_forward(shape: BertShape, w: dict[str, F32], ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64]) -> F32:
    """The same model in plain numpy: last hidden state, [batch, sequence, hidden] (token types all 0)."""
    batch, seq = ids.shape
    hd = shape.hidden // shape.heads
    x = _layer_norm(w["word"][ids] + w["position"][:seq] + w["token_type"][0], w["emb_ln_g"], w["emb_ln_b"])
    additive = ((1.0 - mask[:, None, None, :].astype(np.float32)) * -10000.0).astype(np.float32)

    def heads(t: F32) -> F32:
        return t.reshape(batch, seq, shape.heads, hd).transpose(0, 2, 1, 3)

    for n in range(shape.layers):
        q, k, v = (heads(x @ w[f"l{n}.{p}.w"] + w[f"l{n}.{p}.b"]) for p in ("q", "k", "v"))
        scores = q @ k.transpose(0, 1, 3, 2) / np.float32(math.sqrt(hd)) + additive
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        probs = scores / scores.sum(axis=-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, seq, shape.hidden)
        x = _layer_norm(context @ w[f"l{n}.o.w"] + w[f"l{n}.o.b"] + x, w[f"l{n}.ln1.g"], w[f"l{n}.ln1.b"])
        f = x @ w[f"l{n}.ff1.w"] + w[f"l{n}.ff1.b"]
        gelu = 0.5 * f * (1.0 + _erf((f / np.float32(math.sqrt(2))).astype(np.float32)))
        x = _layer_norm(gelu @ w[f"l{n}.ff2.w"] + w[f"l{n}.ff2.b"] + x, w[f"l{n}.ln2.g"], w[f"l{n}.ln2.b"])
    return x.astype(np.float32)


def build(path: Path, shape: BertShape, seed: int = 0) -> Path:
    """Write the graph once (kept across runs: 1.3 GB and ~a minute at the real shape)."""
    import onnx

    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    onnx.save(build_graph(shape, random_weights(shape, seed)), str(tmp))
    tmp.replace(path)
    return path


def minilm_tokenizer() -> Path:
    from worker.settings import builtin_profile

    return builtin_profile("minilm", None).tokenizer_path


def profile(model: Path, shape: BertShape, quantize: str) -> Any:
    from worker.settings import builtin_profile

    mxbai = builtin_profile("mxbai", None)
    return mxbai.model_copy(update={"model_path": model, "tokenizer_path": minilm_tokenizer(), "dim": shape.hidden,
                                    "quantize": quantize})  # fmt: skip


def check_against_numpy(
    model: Path, shape: BertShape, seed: int, questions: Sequence[str], cache: Path
) -> dict[str, Any]:
    """The fp32 graph through the Embedder (tokenizer, prompt, CLS pooling) vs the numpy model on the same ids."""
    from worker.embed import Embedder

    embedder = Embedder(profile(model, shape, "none"), cache, threads=2)
    got = embedder.embed(list(questions))
    enc = embedder.tokenizer.encode_batch([MXBAI_PROMPT + q for q in questions])
    weights = random_weights(shape, seed)
    worst, cos = 0.0, 1.0
    for i, e in enumerate(enc):
        ids = np.array([e.ids], np.int64)
        mask = np.array([e.attention_mask], np.int64)
        cls = numpy_forward(shape, weights, ids, mask)[0, 0]
        cls /= np.linalg.norm(cls)
        worst = max(worst, float(np.abs(cls - got[i]).max()))
        cos = min(cos, float(cls @ got[i]))
    return {"max_abs_diff": worst, "min_cosine": round(cos, 7), "questions": len(questions)}


def embed_costs(model: Path, shape: BertShape, questions: Sequence[str], cache: Path) -> dict[str, Any]:
    """Batch-1 embed time at these questions' lengths, fp32 as shipped and int8 as the worker prepares it."""
    from worker.embed import Embedder

    out: dict[str, Any] = {}
    fp32: F32 | None = None
    for label, quantize, threads in (("fp32_2threads", "none", 2), ("int8_2threads", "dynamic_int8", 2),
                                     ("int8_1thread", "dynamic_int8", 1)):  # fmt: skip
        embedder = Embedder(profile(model, shape, quantize), cache, threads=threads)
        embedder.warm_up()
        times = []
        # fp32 BERT-large takes a good fraction of a second per question here: a smaller sample says enough.
        for q in questions[:60] if quantize == "none" else questions:
            start = time.perf_counter()
            embedder.embed_one(q)
            times.append((time.perf_counter() - start) * 1000)
        out[label] = pct(times, digits=2)
        if label == "fp32_2threads":
            # Real tokens, not padding: encode_batch pads every question to the longest.
            tokens = [
                sum(e.attention_mask) for e in embedder.tokenizer.encode_batch([MXBAI_PROMPT + q for q in questions])
            ]
            out["tokens_with_prompt"] = {"p50": float(np.median(tokens)), "p90": float(np.percentile(tokens, 90)),
                                         "max": max(tokens)}  # fmt: skip
            fp32 = embedder.embed(list(questions[:64]))
        elif label == "int8_2threads" and fp32 is not None:
            int8 = embedder.embed(list(questions[:64]))
            cos = np.einsum("ij,ij->i", fp32, int8)
            out["int8_vs_fp32_cosine"] = {"min": round(float(cos.min()), 4), "median": round(float(np.median(cos)), 4)}
        del embedder
    return out


def variant(question: str) -> str:
    """The same tokens under another exact-tier key: the exact tier misses, the embedding is the stored one's.

    With random weights a real paraphrase lands anywhere, so a hit is made this way; the request then takes the
    semantic path (exact miss, embed, Redis KNN, threshold, guards) at a real question's length.
    """
    return question[:-2] + "?" if question.endswith(" ?") else question.rstrip("?") + " ?"


def semantic_hits(
    stack: Any, model: Path, shape: BertShape, questions: Sequence[str], cache: Path, layouts: Sequence[tuple[int, int]]
) -> dict[str, Any]:
    """Restart the workers on the mxbai profile pointed at `model`, backfill `questions`, and time semantic hits
    through the client, per layout (lookup processes, onnxruntime threads each)."""
    import json

    from producer.client import Client
    from producer.settings import ProducerSettings
    from worker.settings import Settings
    from worker.tools import backfill
    from worker.tools.backfill_read import WARM_ALL, Fields

    env = {
        "DEJAVU_EMBED_PROFILE": "mxbai",
        "DEJAVU_EMBED_MODEL_PATH": str(model.resolve()),
        "DEJAVU_EMBED_TOKENIZER_PATH": str(minilm_tokenizer()),
        "DEJAVU_MODEL_CACHE_DIR": str(cache.resolve()),
    }
    saved = dict(os.environ)
    out: dict[str, Any] = {}
    tenant = "mxbai-shape"
    try:
        for n, (processes, threads) in enumerate(layouts):
            for name in [p for p in list(stack.procs) if p.startswith(("lookup", "io"))]:
                stack.stop_one(name)
            os.environ.update(env | {"DEJAVU_EMBED_THREADS": str(threads)})
            settings = Settings()
            nodes = stack.start_workers(1, processes, lookup_pool="solo")
            client = Client(ProducerSettings())
            try:
                client.wait_for_workers(len(nodes), timeout=300)
                if n == 0:
                    source = cache / "mxbai-entries.jsonl"
                    with source.open("w", encoding="utf-8") as f:
                        for i, q in enumerate(questions):
                            f.write(json.dumps({"question": q, "answer": f"answer {i}"}) + "\n")
                    options = backfill.Options(
                        source=str(source), fields=Fields("question", "answer"), tenant=tenant,
                        warm_last=WARM_ALL, rejects_path=cache / "mxbai-rejects.jsonl",
                    )  # fmt: skip
                    backfill.run(options, settings)
                latencies, tiers = [], []
                for q in questions:
                    start = time.perf_counter()
                    reply = client.ask(variant(q), tenant=tenant, timeout=60)
                    ms = (time.perf_counter() - start) * 1000
                    tiers.append(str(reply.tier))
                    if reply.tier is not None and reply.tier.value == "redis":
                        latencies.append(ms)
                label = f"{processes}x{threads}"
                out[label] = {"lookup_processes": processes, "threads_each": threads,
                              "semantic_hit_ms": pct(latencies, digits=2),
                              "tiers": {t: tiers.count(t) for t in set(tiers)}}  # fmt: skip
            finally:
                client.close()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return out


def run(stack: Any, questions: Sequence[str], layers: int, cache_dir: Path, seed: int = 0) -> dict[str, Any]:
    """Everything above at `layers` layers (24: the real shape); `stack` is a started LocalStack or None."""
    shape = replace(MXBAI, layers=layers)
    cache = cache_dir / "models"
    start = time.perf_counter()
    print(f"mxbai shape: building the {layers}-layer graph (kept in {cache_dir}) ...", flush=True)
    model = build(cache_dir / f"mxbai-shape-{layers}l-seed{seed}.onnx", shape, seed)
    out: dict[str, Any] = {
        "shape": shape.__dict__,
        "graph": str(model),
        "build_s": round(time.perf_counter() - start, 1),
    }
    print("mxbai shape: checking against numpy, timing fp32 and int8 ...", flush=True)
    out["numpy_check"] = check_against_numpy(model, shape, seed, questions[:4], cache)
    out["embed_ms"] = embed_costs(model, shape, questions, cache)
    if stack is not None:
        print("mxbai shape: semantic hits through the client ...", flush=True)
        out["layouts"] = semantic_hits(stack, model, shape, questions[:100], cache, ((1, 2), (2, 1)))
        timed = [v for v in out["layouts"].values() if v["semantic_hit_ms"].get("n")]
        if timed:
            best = min(timed, key=lambda v: v["semantic_hit_ms"]["p50"])
            out["semantic_hit_p50_ms"] = best["semantic_hit_ms"]["p50"]
            # The pipeline's overhead over its embedder: the best layout's hit against a bare embed with the same
            # onnxruntime threads, timed in this run (the embed itself moves ~2x between AVX2 and VNNI cores).
            embed = out["embed_ms"][{1: "int8_1thread", 2: "int8_2threads"}[best["threads_each"]]]
            out["semantic_hit_vs_embed"] = round(best["semantic_hit_ms"]["p50"] / embed["p50"], 3)
    return out


def main() -> None:
    import json
    import shutil

    from bench.peers_data import workload
    from worker.local.servers import LocalStack, free_port

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=MXBAI.layers)
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--no-system", action="store_true", help="only build, check and time the embedder")
    parser.add_argument("--cache-dir", type=Path, default=Path(".var/peers-cache"))
    args = parser.parse_args()
    questions = sample_questions(workload(), args.questions)
    stack = None
    if not args.no_system:
        root = Path(".var/bench-mxbai")
        shutil.rmtree(root, ignore_errors=True)
        stack = LocalStack(root, redis_port=free_port(), pg_port=free_port(), llm_port=free_port(), llm_delay_ms=0,
                           durable=False)  # fmt: skip
        stack.start()
        os.environ.update(stack.env())
    try:
        print(json.dumps(run(stack, questions, args.layers, args.cache_dir), indent=2))
    finally:
        if stack is not None:
            stack.stop()


def sample_questions(wl: Any, n: int) -> list[str]:
    """Questions of every kind in the benchmark (MedQuAD and Quora), a fixed sample: realistic lengths."""
    import random

    texts = [q.text for q in wl.queries]
    return random.Random(1).sample(texts, min(n, len(texts)))


if __name__ == "__main__":
    main()
