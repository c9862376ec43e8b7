"""Hypothesis strategies for chat requests: arbitrary JSON, and valid requests with one part broken."""

from __future__ import annotations

import time
import uuid
from typing import Any

from hypothesis import strategies as st

from schemas.keys import REPLY_PREFIX

# Any JSON document, including the odd corners: deep nesting, huge and non-finite numbers, unicode.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
texts = st.text(max_size=60) | st.sampled_from(["", " ", "\x00", "\u200b", "é" * 3000, "x" * 9000, "[[standin]]"])
roles = st.sampled_from(["user", "assistant", "system", "developer", "tool", "", "USER"])
# Values that are valid JSON for a float field but not a usable deadline.
odd_numbers = st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e308, -1.0, 0, "soon", True])
fields = st.sampled_from(["version", "request_id", "messages", "tenant", "model", "reply_to", "deadline"])


def valid_request(tenant: str, question: str = "What is a valid question?", timeout: float = 30) -> dict[str, Any]:
    request_id = uuid.uuid4().hex
    return {
        "version": 1,
        "request_id": request_id,
        "messages": [{"role": "user", "content": question}],
        "tenant": tenant,
        "model": "standin-1",
        "reply_to": REPLY_PREFIX + request_id,
        "deadline": time.time() + timeout,
    }


@st.composite
def mutated_requests(draw: st.DrawFn, tenant: str) -> dict[str, Any]:
    """A valid request with one field dropped, replaced by junk, or its messages scrambled."""
    request = valid_request(tenant, question=draw(st.text(min_size=1, max_size=80)))
    kind = draw(st.sampled_from(["drop", "replace", "messages", "extra", "question", "none"]))
    field = draw(fields.filter(lambda f: f not in ("request_id", "reply_to")))
    if kind == "drop":
        del request[field]
    elif kind == "replace":
        request[field] = draw(odd_numbers | json_values)
    elif kind == "messages":
        message = st.fixed_dictionaries({"role": roles, "content": texts})
        request["messages"] = draw(st.lists(message | json_values, max_size=4))
    elif kind == "extra":
        request[draw(st.text(min_size=1, max_size=10))] = draw(json_values)
    elif kind == "question":
        request["messages"][-1]["content"] = draw(texts)
    return request


# JSON nested deeper than the decoder's recursion limit (it raised RecursionError, a 500, before it was caught).
deeply_nested = st.tuples(st.integers(900, 50_000), st.sampled_from([("[", "]"), ('{"a":', "}")])).map(
    lambda t: (t[1][0] * t[0] + "1" + t[1][1] * t[0]).encode()
)
