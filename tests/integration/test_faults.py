"""Faults underneath: answers keep coming, and nothing accepted is lost."""

from __future__ import annotations

import asyncio
import json
import signal
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import redis

from producer.aclient import AsyncClient
from producer.client import Client
from producer.settings import ProducerSettings
from schemas.keys import entry_prefix
from schemas.messages import ChatDelta, ChatReply, Tier
from tests.conftest import llm_calls, wait_until
from tests.integration.conftest import Gateway, dejavu, get, post
from worker.local.servers import LocalStack
from worker.settings import Settings


def pg_has(entry_id: str) -> bool:
    async def query() -> bool:
        conn = await asyncpg.connect(Settings().pg_dsn)
        try:
            return bool(await conn.fetchval("SELECT count(*) FROM dejavu_entries_minilm WHERE id = $1", entry_id))
        finally:
            await conn.close()

    try:
        return asyncio.run(query())
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False


def test_postgres_down_answers_still_come_and_writeback_lands_after(
    client: Client, rdb: redis.Redis, stack: LocalStack, gateway: Gateway, tenant: str
) -> None:
    # Given Postgres is stopped ...
    stack.stop_one("postgres", signal.SIGINT)
    try:
        # ... a cold question is still answered (the durable tier is skipped) ...
        cold = client.ask("Does a cold answer survive a Postgres outage?", tenant=tenant, timeout=20)
        assert cold.ok and cold.tier == Tier.LLM
        # ... and the same question again is served from Redis, which the write-back did reach.
        wait_until(lambda: rdb.exists(entry_prefix("minilm") + (cold.entry_id or "")))
        again = client.ask("Does a cold answer survive a Postgres outage?", tenant=tenant, timeout=20)
        assert again.ok and again.tier == Tier.EXACT
        assert not pg_has(cold.entry_id or "")
        # The gateway (its status is at most a second old) and `dejavu status` say what is degraded, and the
        # gateway still takes requests.
        wait_until(lambda: json.loads(get(gateway, "/healthz")[1])["status"] == "degraded", timeout=5)
        code, body = get(gateway, "/healthz")
        report = json.loads(body)
        assert code == 200 and report["status"] == "degraded" and "Postgres" in report["reasons"][0]
        status = dejavu(stack, "status")
        assert status.returncode == 4 and "status    degraded" in status.stdout, status.stdout + status.stderr
    finally:
        stack.start_postgres()
    # When Postgres is back, the retried write-back lands: nothing was lost.
    wait_until(lambda: pg_has(cold.entry_id or ""), timeout=90)


def test_redis_restarted_everything_reconnects_without_a_restart(
    client: Client, stack: LocalStack, gateway: Gateway, tenant: str
) -> None:
    answered = client.ask("Is this answer kept across a Redis restart?", tenant=tenant, timeout=20)
    assert answered.ok
    wait_until(lambda: client.ask("Is this answer kept across a Redis restart?", tenant=tenant).tier == Tier.EXACT)
    # An async ask is waiting on its client's reply inbox, its question at the LLM, when ...
    in_flight = f"Is an ask in flight across a Redis restart answered ({tenant})?"

    async def ask_across_the_restart() -> ChatReply:
        async with AsyncClient(ProducerSettings()) as aclient:
            return await aclient.ask(in_flight, tenant=tenant, timeout=30)

    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(asyncio.run, ask_across_the_restart())
        wait_until(lambda: llm_calls(stack, in_flight) == 1)
        # ... Redis restarts (a clean stop writes the append-only file) ...
        stack.stop_one("redis")
        stack.start_redis()
        # ... and its reply still reaches it.
        late = waiting.result(timeout=40)
    assert late.ok and late.tier == Tier.LLM and in_flight in (late.answer or "")
    # ... the next requests are served without restarting any worker, client or gateway:
    # the stored entry from the exact tier, a cold question through the LLM node, and one via HTTP.
    again = client.ask("Is this answer kept across a Redis restart?", tenant=tenant, timeout=30)
    assert again.ok and again.tier == Tier.EXACT and again.answer == answered.answer
    cold = client.ask("Is a cold question answered right after a Redis restart?", tenant=tenant, timeout=30)
    assert cold.ok and cold.tier == Tier.LLM
    status, _, body = post(gateway, "/v1/ask", {"question": f"Does the gateway reconnect ({tenant})?"}, gateway.key_a)
    assert status == 200 and json.loads(body)["tier"] == "llm"
    wait_until(lambda: json.loads(get(gateway, "/healthz")[1])["status"] == "ok", timeout=5)
    assert all(proc.poll() is None for proc in stack.procs.values()), {n: p.poll() for n, p in stack.procs.items()}


def test_llm_node_sigkilled_mid_call_its_task_is_redelivered_to_another_node(
    client: Client, stack: LocalStack, tenant: str
) -> None:
    # Given a request whose LLM call is under way on the I/O node ...
    question = f"Who answers when the first worker dies mid-call ({tenant})? [[standin:sleep=2]]"
    request_id = client.submit(question, tenant=tenant, timeout=90)
    wait_until(lambda: llm_calls(stack, question) >= 1)
    # ... when that node is SIGKILLed and another node takes its place ...
    stack.stop_one("io1", signal.SIGKILL)
    stack.start_worker("io1", "llm,writeback", "threads", 8)
    # ... the unacked task is handed to the new node after the visibility timeout, and answered once.
    reply = client.get_reply(request_id, timeout=90)
    assert reply.ok and reply.tier == Tier.LLM, reply
    assert llm_calls(stack, question) == 2


def test_llm_node_sigkilled_mid_stream_the_caller_gets_the_answer_within_seconds_and_no_text_twice(
    stack: LocalStack, tenant: str
) -> None:
    # Given a streamed ask whose answer has begun to reach its caller (the stand-in holds it after 2 tokens) ...
    question = f"Is a stream cut by a dead node finished without repeats ({tenant})? [[standin:hold-after=2]]"

    def held() -> list[dict[str, object]]:
        return [s for s in stack.llm_streams()["in_progress"] if s["question"] == question and s["held"]]

    async def ask_streamed() -> tuple[list[ChatDelta], ChatReply | None]:
        deltas: list[ChatDelta] = []
        async with AsyncClient(ProducerSettings(resend_after_s=0.5)) as aclient:
            request = aclient.request(question, tenant=tenant, timeout=60, stream=True)
            async for event in aclient.stream_request(request):
                if isinstance(event, ChatDelta):
                    deltas.append(event)
                else:
                    return deltas, event
        return deltas, None

    with ThreadPoolExecutor(1) as pool:
        streaming = pool.submit(asyncio.run, ask_streamed())
        wait_until(lambda: len(held()) == 1)
        # ... when its LLM node is SIGKILLed and started again ...
        stack.stop_one("io1", signal.SIGKILL)
        stack.start_worker("io1", "llm,writeback", "threads", 8)
        # ... its producer sends it again once the node's mark lapsed (not after the 20 s visibility timeout): a
        # second call, held at the same place, which goes on ...
        wait_until(lambda: llm_calls(stack, question) == 2 and len(held()) == 1, timeout=15)
        stack.release_llm_streams()
        deltas, reply = streaming.result(timeout=30)
    # ... and the caller saw each piece of the answer once, in order, and then the whole answer.
    assert reply is not None and reply.ok and reply.tier == Tier.LLM, reply
    assert [d.seq for d in deltas] == list(range(len(deltas)))
    assert "".join(str(d.delta.get("content") or "") for d in deltas) == reply.answer
