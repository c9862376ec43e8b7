"""A stand-in for an LLM that speaks OpenAI's chat-completions API, for offline runs and tests
(`python -m worker.local.standin --port 8099`, flags in serve.py).

It is no model, and says so: every text answer starts with "[stand-in LLM, not a real model]", every response
carries the header `X-Standin-LLM: not a real model`, and completions say `system_fingerprint: "standin"`.

One module per concern, in the order a request meets them:
- request.py: validation, OpenAI's 400s;
- answer.py: answer composition (deterministic text, tool calls, JSON modes, truncation, token counts);
- serve.py: the HTTP app, server-sent event streaming, usage and pacing;
- controls.py: what tests use: fault markers in the question and the /standin/* endpoints.
"""
