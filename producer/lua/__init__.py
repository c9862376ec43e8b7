"""The producer's own Redis Lua scripts, kept as files beside this one (the enqueue script both sides run is
schemas/lua/enqueue.lua)."""

from __future__ import annotations

from pathlib import Path

# Admit a request under its tenant's limits, counting it in flight (producer.gateway.limits).
TENANT_ADMIT = (Path(__file__).parent / "tenant_admit.lua").read_text(encoding="utf-8")
