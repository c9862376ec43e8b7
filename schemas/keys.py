"""Every queue, task name and Redis key prefix, in one place."""

# Celery queues: live chat traffic first, write-back off the reply path.
LOOKUP_QUEUE = "lookup"
# Full misses wait seconds on the LLM: they go to their own queue and an I/O pool (threads), so the
# CPU-bound lookup processes never sit idle behind an LLM call.
LLM_QUEUE = "llm"
WRITEBACK_QUEUE = "writeback"
# Chunks of a bulk load (`dejavu backfill`): consumed by lookup nodes, which round-robin it with `lookup`.
BACKFILL_QUEUE = "backfill"

# Task names are the wire contract between producers and workers (producers send by name).
LOOKUP_TASK = "dejavu.lookup"
COMPLETE_TASK = "dejavu.complete"
WRITEBACK_TASK = "dejavu.writeback"
# The verbs of callers that make their own LLM call (schemas.verbs): on the lookup queue, whose nodes embed.
LOOKUP_ONLY_TASK = "dejavu.lookup_only"
STORE_TASK = "dejavu.store"
BACKFILL_TASK = "dejavu.backfill_chunk"
# Removal (`dejavu forget`, feedback): on the writeback queue, so Postgres credentials stay on the workers.
FORGET_TASK = "dejavu.forget"

# Every key this project writes starts here, so one Redis can be shared with other users.
PREFIX = "dejavu"
# Reply lists: a producer BLPOPs `reply:<id>`; only keys under this prefix may be named in reply_to.
REPLY_PREFIX = f"{PREFIX}:reply:"
# Marks a request as answered (SET NX), so a task run twice publishes one reply.
REPLIED_PREFIX = f"{PREFIX}:replied:"
# Re-sending (producer.resend, docs/operations.md): what a producer can read of a request it has no reply to.
# `<prefix><id>`: "<queue>:<place>", the queue the request waits on and its place in that queue's count
# (enqueued_counter), written with the message by schemas/lua/enqueue.lua, so gone with it if Redis loses it.
QUEUED_PREFIX = f"{PREFIX}:queued:"
# `<prefix><id>`: the node working on it ("lookup <node>", "llm <node>"), set with the unacked copy and renewed
# while an LLM call runs; it lapses within seconds of the node's death.
TAKEN_PREFIX = f"{PREFIX}:taken:"
# The task message header that names the request an LLM task works on (the lookup task's id is the request id).
REQUEST_HEADER = "dejavu_request"


def enqueued_counter(queue: str) -> str:
    """How many requests were ever enqueued on `queue`: with its length, which of them were taken off it."""
    return f"{PREFIX}:enqueued:{queue}"


# Coalescing: the lease of the task calling the LLM for an entry, and the answer it publishes.
PENDING_PREFIX = f"{PREFIX}:pending:"
COALESCED_ANSWER_PREFIX = f"{PREFIX}:coalesced:"
# Holders of the pool-wide LLM call slots (worker.llm_slots).
LLM_SLOTS_KEY = f"{PREFIX}:llm:slots"
# Tombstones, `<prefix><entry id>` and `<prefix><tenant>`: when a forget finished. A write-back whose content was
# read before then is refused, so one queued while the forget ran cannot bring the entry back.
FORGOTTEN_PREFIX = f"{PREFIX}:forgotten:"
FORGOTTEN_TENANT_PREFIX = f"{PREFIX}:forgotten-tenant:"
# Blocklist (feedback), Redis copy: one hash per entry id, fields '<tenant>/<answer hash>' ('' for any tenant).
# Postgres holds the durable one (table dejavu_blocked).
BLOCKED_PREFIX = f"{PREFIX}:blocked:"


def entry_prefix(profile: str) -> str:
    """Hash keys of cached entries for one embedding profile (vectors differ per model)."""
    return f"{PREFIX}:{profile}:e:"


def index_name(profile: str) -> str:
    """RediSearch vector index over `entry_prefix(profile)`."""
    return f"{PREFIX}:{profile}:idx"


def reply_key(request_id: str) -> str:
    return f"{REPLY_PREFIX}{request_id}"


# Set by a worker that could not reach Postgres (value: when and why), expiring PG_DOWN_TTL_S after the last
# failure: producers read the stack's Postgres health here without Postgres credentials of their own.
PG_DOWN_KEY = f"{PREFIX}:health:postgres-down"
PG_DOWN_TTL_S = 30

# The tenants a LangChain cache (producer.langchain.DejavuCache) has stored under, one per model and parameter set:
# a set per cache tenant, `<prefix><tenant>`, so that its clear() forgets them all.
LANGCHAIN_TENANTS_PREFIX = f"{PREFIX}:langchain:"

# Usage per tenant and UTC day, `<prefix><tenant>:<YYYY-MM-DD>`: one hash of counters that the workers add to as they
# publish each chat reply (worker.reply.usage_counts) and `dejavu report` sums. Kept USAGE_TTL_S.
USAGE_PREFIX = f"{PREFIX}:usage:"
USAGE_TTL_S = 400 * 24 * 3600


def usage_key(tenant: str, day: str) -> str:
    return f"{USAGE_PREFIX}{tenant}:{day}"
