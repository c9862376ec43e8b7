"""Questions to unit vectors with a local ONNX model: one session per worker process."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from tokenizers import Tokenizer

from worker.errors import ConfigurationError
from worker.model_prep import prepared_model
from worker.settings import EmbedProfile

Vectors = npt.NDArray[np.float32]
# Past ~32 short questions a batch stops paying for itself; padding to the longest item eats it.
BATCH_SIZE = 32


class Embedder:
    def __init__(self, profile: EmbedProfile, cache_dir: Path, threads: int = 1) -> None:
        for what, path in (("model", profile.model_path), ("tokenizer", profile.tokenizer_path)):
            if not path.is_file():
                raise ConfigurationError(
                    f"embedding {what} for profile {profile.name!r} not found at {path}: set "
                    f"DEJAVU_EMBED_MODEL_DIR (or DEJAVU_EMBED_{what.upper()}_PATH) to a local copy"
                )
        self.profile = profile
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        model_file = prepared_model(profile.model_path, cache_dir, profile.quantize)
        self.session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(profile.tokenizer_path))
        # Some shipped tokenizer.json files pad every input to a fixed length; pad to the batch's longest.
        pad = self.tokenizer.padding or {}
        self.tokenizer.enable_padding(pad_id=pad.get("pad_id", 0), pad_token=pad.get("pad_token", "[PAD]"))
        self.tokenizer.enable_truncation(max_length=profile.max_tokens)
        self._input_names = {i.name for i in self.session.get_inputs()}

    def warm_up(self) -> None:
        """Run once at start so the first request does not pay for graph setup, and check the dimension."""
        dim = self.embed(["warm up"]).shape[1]
        if dim != self.profile.dim:
            raise ConfigurationError(
                f"profile {self.profile.name!r} declares dim {self.profile.dim} but the model gives {dim}"
            )

    def embed_one(self, text: str) -> Vectors:
        vector: Vectors = self._run([text])[0]
        return vector

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed many texts, in length-sorted batches, returned in input order."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.profile.dim), dtype=np.float32)
        for start in range(0, len(order), BATCH_SIZE):
            chunk = order[start : start + BATCH_SIZE]
            out[chunk] = self._run([texts[i] for i in chunk])
        return out

    def _run(self, texts: Sequence[str]) -> Vectors:
        encodings = self.tokenizer.encode_batch([self.profile.prompt + t for t in texts])
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self.session.run(None, feeds)[0]
        if self.profile.pooling == "cls":
            pooled = hidden[:, 0, :]
        else:
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        unit: Vectors = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return unit
