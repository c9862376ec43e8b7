"""Who is asking: the API key names the tenant; the operator's key opens /metrics and the detailed /healthz."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

from aiohttp import web

from producer.gateway.errors import GatewayError
from producer.settings import TenantKey


class ApiKeys:
    """API keys kept only as SHA-256 digests, and looked up in constant time: every stored digest is compared,
    with hmac.compare_digest, whatever the presented key."""

    def __init__(self, tenants: dict[str, TenantKey], metrics_key: str | None, open_without_key: bool) -> None:
        self._tenants = [(_digest(key), tenant) for key, tenant in tenants.items()]
        self._metrics = None if metrics_key is None else _digest(metrics_key)
        self._open = open_without_key

    def tenant(self, key: str) -> TenantKey | None:
        presented, found = _digest(key), None
        for digest, tenant in self._tenants:
            if hmac.compare_digest(presented, digest):
                found = tenant
        return found

    def operator(self, key: str | None) -> bool:
        """Whether `key` opens /metrics and the detailed /healthz. With no DEJAVU_METRICS_KEY: nobody, unless the
        gateway listens on loopback only or DEJAVU_METRICS_PUBLIC is true."""
        if self._metrics is None:
            return self._open
        return key is not None and hmac.compare_digest(_digest(key), self._metrics)


KEYS = web.AppKey("keys", ApiKeys)


def loopback(host: str) -> bool:
    """Whether a listening address is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def bearer(request: web.Request) -> str | None:
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" and key.strip() else None


def tenant_of(request: web.Request) -> TenantKey:
    """The tenant the request's API key names, with its limits; 401 without a known key."""
    key = bearer(request)
    if key is None:
        raise GatewayError(401, "missing_api_key", "send an API key as 'Authorization: Bearer <key>'",
                           headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
    tenant = request.app[KEYS].tenant(key)
    if tenant is None:
        raise GatewayError(401, "invalid_api_key", "the API key is not known to this gateway",
                           headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
    return tenant
