"""The x-dejavu-* response headers: where an answer came from, and what serving it from the cache saved."""

from __future__ import annotations

from schemas.messages import ChatReply

# On every response, errors included: the id the gateway's and the workers' logs name the request by.
REQUEST_ID_HEADER = "x-request-id"
TIER_HEADER = "x-dejavu-tier"
# On a hit: the tokens the LLM spent on the answer when it made it, which serving it from the cache saved.
SAVED_HEADER = "x-dejavu-saved-tokens"


def cache_headers(reply: ChatReply) -> dict[str, str]:
    headers = {"x-dejavu-request-id": reply.request_id}
    if reply.tier is not None:
        headers[TIER_HEADER] = reply.tier.value
    if reply.similarity is not None:
        headers["x-dejavu-similarity"] = f"{reply.similarity:.6f}"
    if reply.entry_id is not None:
        headers["x-dejavu-entry"] = reply.entry_id
    if reply.saved is not None:
        headers[SAVED_HEADER] = str(reply.saved.total_tokens)
    return headers
