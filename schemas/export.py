"""Write the wire contracts as JSON Schema files for services in other languages.

python -m schemas.export          # rewrite schemas/json/*.schema.json
python -m schemas.export --check  # exit 1 if the files differ from the models
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import BaseModel

from schemas.messages import ChatReply, ChatRequest, ForgetReply, ForgetRequest, LookupRequest, StoreRequest

JSON_DIR = Path(__file__).resolve().parent / "json"
MODELS: dict[str, type[BaseModel]] = {
    "chat_request": ChatRequest,
    "chat_reply": ChatReply,
    "lookup_request": LookupRequest,
    "store_request": StoreRequest,
    "forget_request": ForgetRequest,
    "forget_reply": ForgetReply,
}


def render(model: type[BaseModel]) -> str:
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **model.model_json_schema()}
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def rendered() -> dict[Path, str]:
    return {JSON_DIR / f"{name}.schema.json": render(model) for name, model in MODELS.items()}


def stale() -> list[Path]:
    """Files missing or different from what the models render now."""
    return [path for path, text in rendered().items() if not path.exists() or path.read_text("utf-8") != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schemas.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when a file is out of date")
    args = parser.parse_args(argv)
    if args.check:
        out_of_date = stale()
        for path in out_of_date:
            print(f"{path} is out of date: run python -m schemas.export", file=sys.stderr)
        return 1 if out_of_date else 0
    JSON_DIR.mkdir(exist_ok=True)
    for path, text in rendered().items():
        path.write_text(text, "utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
