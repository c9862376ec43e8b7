"""An OpenAI-compatible embeddings endpoint for the peers benchmark's LiteLLM proxy, serving the workers' own
embedder (worker.embed.Embedder, the profile's MiniLM ONNX model, one intra-op thread as the workers run it).

`python -m bench.embed_server --port N`: POST /v1/embeddings takes {"model", "input": text or [texts],
"encoding_format"?} and answers as OpenAI does (floats, or base64 of little-endian float32 when asked, as the
OpenAI SDK asks by default). Each text is embedded alone, as the workers do, so both systems get the same vectors.
Several processes can serve one port (SO_REUSEPORT), one per lookup process of this project.
"""

from __future__ import annotations

import argparse
import base64
from typing import Any

from aiohttp import web

from worker.embed import Embedder
from worker.settings import Settings


def make_app(embedder: Embedder) -> web.Application:
    async def embeddings(request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return web.json_response({"error": {"message": "input: a string or a list of strings"}}, status=400)
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for i, text in enumerate(texts):
            vector = embedder.embed_one(text).astype("<f4")
            value: Any = base64.b64encode(vector.tobytes()).decode() if as_base64 else vector.tolist()
            data.append({"object": "embedding", "index": i, "embedding": value})
        return web.json_response({"object": "list", "data": data, "model": body.get("model", ""),
                                  "usage": {"prompt_tokens": 0, "total_tokens": 0}})  # fmt: skip

    app = web.Application()
    app.router.add_post("/v1/embeddings", embeddings)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    settings = Settings()
    embedder = Embedder(settings.profile(), settings.model_cache_dir, threads=settings.embed_threads)
    embedder.warm_up()
    web.run_app(make_app(embedder), host="127.0.0.1", port=args.port, reuse_port=True, print=None)


if __name__ == "__main__":
    main()
