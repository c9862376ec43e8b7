"""The gateway's per-app state, as aiohttp app keys: settings, the shared client and the metrics (the API keys
are producer.gateway.auth.KEYS)."""

from __future__ import annotations

from aiohttp import web

from producer.aclient import AsyncClient
from producer.metrics import GatewayMetrics
from producer.settings import ProducerSettings

SETTINGS = web.AppKey("settings", ProducerSettings)
CLIENT = web.AppKey("client", AsyncClient)
METRICS = web.AppKey("metrics", GatewayMetrics)
# Per request: its id, made by the middleware; the ChatRequest takes it too, so the worker logs name it.
REQUEST_ID = web.RequestKey("request_id", str)
