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
        # Some shipped tokenizer.json files pad every input to a fixed length; one text needs no padding.
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=profile.max_tokens)
        self._input_names = {i.name for i in self.session.get_inputs()}

    def warm_up(self) -> None:
        """Run once at start so the first request does not pay for graph setup, and check the dimension."""
        dim = self.embed_one("warm up").shape[0]
        if dim != self.profile.dim:
            raise ConfigurationError(
                f"profile {self.profile.name!r} declares dim {self.profile.dim} but the model gives {dim}"
            )

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed many texts, each alone, returned in input order.

        Not in batches: the int8 model quantizes activations with one scale per batch, so a text's vector would
        move with its batch mates (cosine down to ~0.98), and a backfilled entry would not be the vector the same
        question gets when it is asked. Alone, a text costs ~10-30 % more than in length-sorted batches of 32.
        """
        out = np.empty((len(texts), self.profile.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i] = self.embed_one(text)
        return out

    def embed_one(self, text: str) -> Vectors:
        ids = np.array([self.tokenizer.encode(self.profile.prompt + text).ids], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self.session.run(None, feeds)[0][0]
        # One text, no padding: mean pooling is over every token.
        pooled = hidden[0] if self.profile.pooling == "cls" else hidden.mean(axis=0)
        unit: Vectors = (pooled / max(float(np.linalg.norm(pooled)), 1e-12)).astype(np.float32)
        return unit
