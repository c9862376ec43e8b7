"""The JSON Schema files in schemas/json/ are what the models say today."""

from __future__ import annotations

import json

from schemas.export import JSON_DIR, MODELS, rendered, stale


def test_exported_schemas_match_the_models() -> None:
    assert stale() == [], "schemas/json is out of date: run `python -m schemas.export`"


def test_every_model_has_a_file_and_it_is_json_schema() -> None:
    assert set(rendered()) == {JSON_DIR / f"{name}.schema.json" for name in MODELS}
    for path in rendered():
        schema = json.loads(path.read_text("utf-8"))
        assert schema["$schema"].endswith("2020-12/schema") and schema["type"] == "object"
