"""The cache for LangChain: `set_llm_cache(DejavuCache())`, in front of whatever model the application calls.

    from langchain_core.globals import set_llm_cache
    from producer.langchain import DejavuCache
    set_llm_cache(DejavuCache(tenant="my-app"))   # or per model: ChatAnthropic(..., cache=DejavuCache(...))

LangChain asks the cache before it calls the model (`lookup`) and hands it the model's answer after (`update`): the
two verbs of the queue (schemas.verbs), so the model is never called by the cache and can be any provider. What a
request is, is read as the gateway reads a chat-completions body: the messages LangChain serializes in `prompt` (a
plain-text LLM's prompt is one user message) — the last user message is the question, matched semantically, the
earlier turns are in the scope — and the model and its parameters from `llm_string`. Each `llm_string` gets a
tenant of its own below the cache's (`<tenant>.lc.<hash>`), so `clear(llm_string=...)` forgets exactly that model
and parameter set and `clear()` every one this tenant has stored (they are listed in Redis as they are stored).

Generations come back as they were stored: the message's text, tool calls, additional kwargs, response metadata
and usage metadata; a hit adds `response_metadata["dejavu"]` (tier, similarity, entry id, `saved_tokens`). An answer
the cache must not keep (cut short, empty, a refusal) or a prompt it cannot key on (images) is simply not cached.

Needs the `langchain` extra (langchain-core); settings are the producer's `DEJAVU_*`, as for the clients.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import warnings
import weakref
from typing import Any, cast

import redis
from kombu.exceptions import OperationalError
from langchain_core._api import LangChainBetaWarning
from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.load import loads
from langchain_core.messages import AIMessage, BaseMessage, convert_to_openai_messages
from langchain_core.outputs import ChatGeneration, Generation
from redis.exceptions import RedisError

from producer.aclient import AsyncClient
from producer.base import Overloaded, ReplyTimeout
from producer.client import Client
from producer.openai_compat import CompletionBody
from producer.settings import ProducerSettings, get_settings
from schemas.keys import LANGCHAIN_TENANTS_PREFIX
from schemas.messages import TENANT_PATTERN, ChatReply, LookupRequest, StoredAnswer, StoreRequest
from schemas.requests import RequestOptions, build_as

log = logging.getLogger(__name__)

# What a cache that cannot be reached raises: the model is asked (or its answer left uncached) instead.
UNAVAILABLE = (ReplyTimeout, Overloaded, RedisError, OSError, OperationalError)

# `<tenant>.lc.<16 hex>` must fit the 64 characters of a tenant name.
MAX_TENANT_CHARS = 64 - len(".lc.") - 16
_MODEL_IN_PARAMS = re.compile(r"'model(?:_name)?', '([^']{1,128})'")


class DejavuCache(BaseCache):
    """A LangChain cache on the dejavu queue: exact, then semantic (Redis, pgvector) lookups, never a model call."""

    def __init__(
        self, tenant: str = "default", settings: ProducerSettings | None = None, timeout: float | None = None
    ) -> None:
        """`timeout`: seconds a lookup or update waits for the workers (default DEJAVU_DEFAULT_TIMEOUT_S); past it,
        or with the cache unreachable, LangChain calls the model as if the cache had missed."""
        if len(tenant) > MAX_TENANT_CHARS or not re.match(TENANT_PATTERN, tenant):
            raise ValueError(f"tenant: use [A-Za-z0-9_.-], at most {MAX_TENANT_CHARS} characters, not {tenant!r}")
        self.tenant = tenant
        self.settings = settings or get_settings()
        self.timeout = timeout
        self._client: Client | None = None
        self._redis: redis.Redis | None = None
        # An AsyncClient belongs to the loop it runs on: one per running loop.
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncClient] = weakref.WeakKeyDictionary()

    # --- what LangChain calls ---

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        request = self._request(LookupRequest, prompt, llm_string)
        if request is None:
            return None
        try:
            return _generations(self._sync().ask_request(request))
        except UNAVAILABLE as exc:
            _unavailable("lookup", exc)
            return None

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        request = self._request(LookupRequest, prompt, llm_string)
        if request is None:
            return None
        try:
            return _generations(await self._async().ask_request(request))
        except UNAVAILABLE as exc:
            _unavailable("lookup", exc)
            return None

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        request = self._request(StoreRequest, prompt, llm_string, return_val)
        if request is None:
            return
        try:
            self._sync_redis().sadd(self._registry, request.tenant)
            _stored(self._sync().ask_request(request))
        except UNAVAILABLE as exc:
            _unavailable("update", exc)

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        request = self._request(StoreRequest, prompt, llm_string, return_val)
        if request is None:
            return
        try:
            client = self._async()
            await client.redis.sadd(self._registry, request.tenant)
            _stored(await client.ask_request(request))
        except UNAVAILABLE as exc:
            _unavailable("update", exc)

    def clear(self, **kwargs: Any) -> None:
        """Forget this tenant's entries; with `llm_string=...` only those stored for that model and parameters."""
        r, client = self._sync_redis(), self._sync()
        for tenant in self._tenants(kwargs, cast("set[bytes]", r.smembers(self._registry))):
            _forgot(client.forget(all_entries=True, tenant=tenant))
            r.srem(self._registry, tenant)

    async def aclear(self, **kwargs: Any) -> None:
        client = self._async()
        stored = await client.redis.smembers(self._registry)
        for tenant in self._tenants(kwargs, cast("set[bytes]", stored)):
            _forgot(await client.forget(all_entries=True, tenant=tenant))
            await client.redis.srem(self._registry, tenant)

    # --- lifecycle ---

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._redis is not None:
            self._redis.close()
        self._client = self._redis = None

    async def aclose(self) -> None:
        """Close the async client of the running loop (each loop that used the cache has its own)."""
        client = self._aclients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    # --- requests ---

    @property
    def _registry(self) -> str:
        return f"{LANGCHAIN_TENANTS_PREFIX}{self.tenant}"

    def scope_tenant(self, llm_string: str) -> str:
        """The tenant the entries of one model and parameter set are kept under."""
        return f"{self.tenant}.lc.{hashlib.sha256(llm_string.encode()).hexdigest()[:16]}"

    def _tenants(self, kwargs: dict[str, Any], stored: set[bytes]) -> list[str]:
        llm_string = kwargs.get("llm_string")
        if llm_string is not None:
            return [self.scope_tenant(llm_string)]
        return sorted({t.decode() for t in stored})

    def _request(
        self,
        kind: type[LookupRequest] | type[StoreRequest],
        prompt: str,
        llm_string: str,
        answer: RETURN_VAL_TYPE | None = None,
    ) -> LookupRequest | StoreRequest | None:
        """The queue request LangChain's call stands for; None (not cached) for what the cache cannot key on."""
        try:
            options: RequestOptions = {
                "messages": _messages(prompt), "tenant": self.scope_tenant(llm_string),
                "model": _model(llm_string) or self.settings.llm_model, "timeout": self.timeout,
            }  # fmt: skip
            fields = {} if answer is None else {"answer": _answer(answer)}
            return build_as(kind, self.settings, None, fields, **options)
        except ValueError as exc:
            log.info("not cached (%s): %s", "update" if answer is not None else "lookup", exc)
            return None

    def _sync(self) -> Client:
        if self._client is None:
            self._client = Client(self.settings)
        return self._client

    def _sync_redis(self) -> redis.Redis:
        if self._redis is None:
            self._redis = redis.Redis.from_url(self.settings.redis_url)
        return self._redis

    def _async(self) -> AsyncClient:
        loop = asyncio.get_running_loop()
        if loop not in self._aclients:
            self._aclients[loop] = AsyncClient(self.settings)
        return self._aclients[loop]


def _messages(prompt: str) -> list[dict[str, Any]]:
    """The OpenAI messages of a prompt: a chat model's serialized messages, or a plain-text LLM's prompt."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LangChainBetaWarning)
            loaded = loads(prompt, allowed_objects="messages")
    except (ValueError, TypeError, KeyError, NotImplementedError):  # not JSON, or not LangChain's: plain text
        loaded = None
    if not (isinstance(loaded, list) and loaded and all(isinstance(m, BaseMessage) for m in loaded)):
        return [{"role": "user", "content": prompt}]
    # As the gateway reads a chat-completions body: text parts joined, anything else refused (ValueError).
    return CompletionBody(messages=convert_to_openai_messages(loaded)).chat_messages()


def _model(llm_string: str) -> str | None:
    """The model's name in LangChain's llm_string (serialized model, then its call parameters), if it says."""
    head, _, params = llm_string.partition("---")
    try:
        kwargs = json.loads(head).get("kwargs", {})
        name = kwargs.get("model_name") or kwargs.get("model")
        if isinstance(name, str) and 0 < len(name) <= 128:
            return name
    except (ValueError, AttributeError):
        pass
    found = _MODEL_IN_PARAMS.search(params or head)
    return found.group(1) if found else None


def _answer(return_val: RETURN_VAL_TYPE) -> StoredAnswer:
    """The one generation LangChain made, as the answer to store."""
    if len(return_val) != 1:
        raise ValueError(f"{len(return_val)} generations: a cache keeps one answer per request")
    generation = return_val[0]
    if not isinstance(generation, ChatGeneration):  # a plain-text LLM's
        return StoredAnswer.of_text(
            generation.text, message_extra=_json({"generation_info": generation.generation_info})
        )
    message = generation.message
    if not isinstance(message, AIMessage):
        raise ValueError(f"a {type(message).__name__} is not an answer")
    calls = [{"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": json.dumps(c["args"])}}
             for c in message.tool_calls]  # fmt: skip
    info = {**(generation.generation_info or {}), **message.response_metadata}
    usage = message.usage_metadata
    extra = {"additional_kwargs": message.additional_kwargs, "response_metadata": message.response_metadata,
             "usage_metadata": usage, "generation_info": generation.generation_info}  # fmt: skip
    return StoredAnswer.model_validate({
        "message": {"role": "assistant", "content": message.text, **({"tool_calls": calls} if calls else {})},
        "finish_reason": info.get("finish_reason") or ("tool_calls" if calls else "stop"),
        "usage": None if usage is None else {"prompt_tokens": usage["input_tokens"],
                                             "completion_tokens": usage["output_tokens"],
                                             "total_tokens": usage["total_tokens"]},
        "refusal": message.additional_kwargs.get("refusal"),
        "message_extra": _json(extra),
    })  # fmt: skip


def _json(extra: dict[str, Any]) -> dict[str, Any]:
    """What of `extra` survives JSON as it is: a part that does not (an object of the provider's SDK) is left out."""
    kept: dict[str, Any] = {}
    for name, value in extra.items():
        try:
            if value is not None and json.loads(json.dumps(value)) == value:
                kept[name] = value
        except (TypeError, ValueError):
            log.info("not cached with the answer: its %s (not JSON)", name)
    return kept


def _generations(reply: ChatReply) -> list[Generation] | None:
    if not reply.ok:
        log.warning("cache lookup failed, asking the model: %s", reply.error)
        return None
    if not reply.hit:
        return None
    extra = reply.message_extra or {}
    saved = reply.saved.total_tokens if reply.saved is not None else 0
    served = {"tier": reply.tier, "similarity": reply.similarity, "entry_id": reply.entry_id, "saved_tokens": saved}
    info = extra.get("generation_info")
    if "additional_kwargs" not in extra and not reply.tool_calls:  # stored from a plain-text LLM
        return [Generation(text=reply.answer or "", generation_info={**(info or {}), "dejavu": served})]
    message = AIMessage(
        content=reply.answer or "",
        tool_calls=[{"name": c.function.name, "args": json.loads(c.function.arguments), "id": c.id,
                     "type": "tool_call"} for c in reply.tool_calls or ()],
        additional_kwargs=extra.get("additional_kwargs", {}),
        response_metadata={**extra.get("response_metadata", {}), "dejavu": served},
        usage_metadata=extra.get("usage_metadata"),
    )  # fmt: skip
    return [ChatGeneration(message=message, generation_info=info)]


def _unavailable(verb: str, exc: Exception) -> None:
    # The application's model call must not fail because the cache is down or slow: it goes on uncached.
    log.warning("cache %s skipped, the cache is unavailable: %s", verb, exc)


def _stored(reply: ChatReply) -> None:
    if not reply.ok:
        log.warning("the answer was not cached: %s", reply.error)


def _forgot(reply: Any) -> None:
    if not reply.ok:
        raise RuntimeError(f"clearing the cache failed: {reply.error}")
