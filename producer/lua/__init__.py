"""The producer's Redis Lua scripts, kept as files beside this one."""

from __future__ import annotations

from pathlib import Path

# LPUSH a task message unless the queue is already at its limit (answers the new depth, or minus the depth).
ENQUEUE_BOUNDED = (Path(__file__).parent / "enqueue_bounded.lua").read_text(encoding="utf-8")
# Admit a request under its tenant's limits, counting it in flight (producer.gateway.limits).
TENANT_ADMIT = (Path(__file__).parent / "tenant_admit.lua").read_text(encoding="utf-8")
