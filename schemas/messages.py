"""Every queue contract by its old name, for the code that imports them from here.

The contracts live in one module per concept: `schemas.openai_shapes` (OpenAI's message, tool and usage shapes),
`schemas.chat` (the chat request), `schemas.reply` (its reply, errors and stream deltas), `schemas.verbs`
(lookup-only and store) and `schemas.forget` (removal).
"""

from schemas.chat import (
    CTX_ALLOW_EXPIRED,
    CTX_MAX_QUESTION_BYTES,
    DEFAULT_MAX_QUESTION_BYTES,
    ENTRY_ID_PATTERN,
    FORWARDED,
    GENERATION_FIELDS,
    ID_PATTERN,
    NOT_ANSWER_SHAPING,
    REPLY_TO_PATTERN,
    SCHEMA_VERSION,
    TENANT_PATTERN,
    UNSUPPORTED,
    CacheControl,
    ChatRequest,
)
from schemas.forget import FORGET_SCHEMA_VERSION, MAX_REASON_CHARS, ForgetReply, ForgetRequest, Removed
from schemas.openai_shapes import (
    SYSTEM_ROLES,
    ChatMessage,
    FinishReason,
    FunctionDef,
    JsonSchemaFormat,
    NamedFunction,
    NamedToolChoice,
    ResponseFormat,
    Role,
    Tool,
    ToolCall,
    ToolFunctionCall,
    Usage,
)
from schemas.reply import (
    ChatDelta,
    ChatReply,
    ErrorCode,
    ReplyError,
    ReplyEvent,
    Tier,
    UpstreamError,
    parse_reply_event,
)
from schemas.verbs import LookupRequest, StoredAnswer, StoreRequest

__all__ = [
    "CTX_ALLOW_EXPIRED", "CTX_MAX_QUESTION_BYTES", "DEFAULT_MAX_QUESTION_BYTES", "ENTRY_ID_PATTERN",
    "FORGET_SCHEMA_VERSION", "FORWARDED", "GENERATION_FIELDS", "ID_PATTERN", "MAX_REASON_CHARS",
    "NOT_ANSWER_SHAPING", "REPLY_TO_PATTERN", "SCHEMA_VERSION", "SYSTEM_ROLES", "TENANT_PATTERN", "UNSUPPORTED",
    "CacheControl", "ChatDelta", "ChatMessage", "ChatReply", "ChatRequest", "ErrorCode", "FinishReason",
    "ForgetReply", "ForgetRequest", "FunctionDef", "JsonSchemaFormat", "LookupRequest", "NamedFunction",
    "NamedToolChoice", "Removed", "ReplyError", "ReplyEvent", "ResponseFormat", "Role", "StoreRequest",
    "StoredAnswer", "Tier", "Tool", "ToolCall", "ToolFunctionCall", "UpstreamError", "Usage", "parse_reply_event",
]  # fmt: skip
