"""HTTP gateway: the cache for services in any language, OpenAI-compatible or native JSON.

    python -m producer.gateway --host 127.0.0.1 --port 8080

Every /v1 route needs `Authorization: Bearer <key>`; the key names the tenant (DEJAVU_GATEWAY_API_KEYS),
so a caller can only ever read, or give feedback on, its own tenant's cache. Errors have OpenAI's shape,
`{"error": {"message", "type", "code"}}`; docs/wire.md lists the routes, statuses and headers.

Modules: app (the app, middleware, main), routes (/v1), auth (API keys), bodies (request bodies), errors (error
responses and their statuses), sse (streamed completions), health (/healthz, /metrics), headers, state.
"""
