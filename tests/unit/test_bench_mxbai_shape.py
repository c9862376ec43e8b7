"""The mxbai-shaped graph builder against its numpy reference, on a tiny shape (the real one is 1.3 GB)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from bench.mxbai_shape import BertShape, build_graph, numpy_forward, random_weights

TINY = BertShape(layers=2, hidden=32, heads=4, intermediate=64, vocab=100, max_positions=16)


def run_onnx(path: Path, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    out: np.ndarray = session.run(None, feeds)[0]
    return out


def test_graph_matches_numpy_on_a_padded_batch(tmp_path: Path) -> None:
    weights = random_weights(TINY, seed=3)
    path = tmp_path / "tiny.onnx"
    model = build_graph(TINY, weights)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    rng = np.random.default_rng(0)
    ids = rng.integers(0, TINY.vocab, size=(3, 9), dtype=np.int64)
    mask = np.ones_like(ids)
    mask[1, 6:] = 0  # padded rows: the mask must keep padding out of every real position
    mask[2, 3:] = 0
    got = run_onnx(path, ids, mask)
    want = numpy_forward(TINY, weights, ids, mask)
    assert got.shape == (3, 9, TINY.hidden)
    for row, length in enumerate((9, 6, 3)):
        np.testing.assert_allclose(got[row, :length], want[row, :length], atol=2e-4)
    # Padding changes nothing in the real positions: the third row alone gives the same CLS vector.
    alone = run_onnx(path, ids[2:3, :3], mask[2:3, :3])
    np.testing.assert_allclose(alone[0, 0], got[2, 0], atol=2e-4)


def test_int8_dynamic_quantization_keeps_the_direction(tmp_path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    weights = random_weights(TINY, seed=4)
    fp32, int8 = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    onnx.save(build_graph(TINY, weights), str(fp32))
    quantize_dynamic(str(fp32), str(int8), per_channel=True, weight_type=QuantType.QInt8)
    ids = np.array([[1, 5, 7, 9, 2]], dtype=np.int64)
    mask = np.ones_like(ids)
    a, b = run_onnx(fp32, ids, mask)[0, 0], run_onnx(int8, ids, mask)[0, 0]
    assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) > 0.95
    assert any(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for n in onnx.load(str(int8)).graph.node)
