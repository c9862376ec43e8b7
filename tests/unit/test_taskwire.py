"""Our LPUSHed task message has the shape Celery's own producer builds (protocol 2)."""

from __future__ import annotations

import base64
import json

from celery import Celery

from schemas.taskwire import task_message


def test_message_matches_celery_protocol_2() -> None:
    ours = json.loads(task_message("dejavu.lookup", "lookup", ["payload"], task_id="tid-1"))
    theirs = Celery("probe").amqp.as_task_v2("tid-1", "dejavu.lookup", args=["payload"])
    assert set(ours["headers"]) == set(theirs.headers)
    assert ours["headers"]["task"] == "dejavu.lookup" and ours["headers"]["id"] == "tid-1"
    args, kwargs, embed = json.loads(base64.b64decode(ours["body"]))
    their_args, their_kwargs, their_embed = theirs.body
    assert (args, kwargs, embed) == (list(their_args), their_kwargs, their_embed)
    assert ours["properties"]["delivery_info"] == {"exchange": "", "routing_key": "lookup"}
    assert ours["content-type"] == "application/json" and ours["properties"]["body_encoding"] == "base64"
