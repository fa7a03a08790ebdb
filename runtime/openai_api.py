"""The OpenAI-compatible wire format of `sgedge serve`: request bodies in, JSON out.

Only what a local chat app needs: chat and plain completions, streamed or not, with
sgedge's policy choice on top. Parameters sgedge cannot honour (n > 1, tools, logprobs,
penalties...) are refused with a message rather than ignored, so a client never gets a
reply made differently from what it asked for.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sgedge.errors import InputError
from sgedge.runtime.stop import check_stops
from sgedge.runtime.structured import parse_response_format
from sgedge.runtime.types import MAX_REPEAT_PENALTY, GenerationResult

# Fields that would change the reply and that sgedge does not implement: refused.
_UNSUPPORTED = {
    "tools": "tool calling", "functions": "function calling", "tool_choice": "tool calling",
    "function_call": "function calling", "logprobs": "logprobs", "top_logprobs": "logprobs",
    "logit_bias": "logit_bias", "suffix": "suffix", "echo": "echo", "best_of": "best_of",
    "audio": "audio output", "prediction": "predicted outputs",
}
# Sampling extensions other servers take (llama.cpp's): accepted at their neutral value only.
_NEUTRAL = {"frequency_penalty": 0.0, "presence_penalty": 0.0, "min_p": 0.0,
            "typical_p": 1.0, "tfs_z": 1.0, "mirostat": 0, "mirostat_mode": 0}
_ROLES = ("system", "developer", "user", "assistant")


class ApiError(Exception):
    """A request the server answers with an HTTP error and an OpenAI-style error body."""

    TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "invalid_request_error",
             404: "invalid_request_error", 405: "invalid_request_error", 411: "invalid_request_error",
             413: "invalid_request_error", 500: "server_error"}

    CODES = {401: "invalid_api_key", 413: "request_too_large"}

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param
        self.code = code or self.CODES.get(status)

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.TYPES.get(self.status, "invalid_request_error"), self.param, self.code)


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape: {"error": {message, type, param, code}}."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


@dataclass
class Request:
    """One generation request, checked and in the runtime's terms."""

    kind: str  # "chat" or "completion"
    prompt: str | list[dict[str, str]]
    sampling: dict[str, Any]
    stop: tuple[str, ...] = ()
    stream: bool = False
    include_usage: bool = False
    model: str | None = None
    policy: str | None = None  # a bundle policy named by the request
    adapters: list[tuple[str, float]] | None = None  # resident adapters named by the request ([] = bare base)
    template_kwargs: dict[str, Any] | None = None  # chat_template_kwargs (vLLM's and llama.cpp's field)
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:24])
    created: int = field(default_factory=lambda: int(time.time()))


def _number(body: Mapping[str, Any], key: str, kind: type, default: Any,
            lo: float = -3.4e38, hi: float = 3.4e38) -> Any:
    """A number parameter of `kind` within [lo, hi] (OpenAI's documented ranges), or a 400."""
    value = body.get(key)
    if value is None:
        return default
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi
            or (kind is int and value != int(value))):
        what = "an integer" if kind is int else "a number"
        raise ApiError(400, f"'{key}' must be {what} from {lo:g} to {hi:g} (got {str(value)[:40]})", key)
    return kind(value)


def _flag(body: Mapping[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise ApiError(400, f"'{key}' must be true or false (got {str(value)[:40]})", key)
    return value


def _content(message: Mapping[str, Any], i: int) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise ApiError(400, f"messages[{i}]: only text content parts are supported (got {kind!r})",
                               "messages")
            texts.append(part["text"])
        return "".join(texts)
    raise ApiError(400, f"messages[{i}].content must be a string or a list of text parts", "messages")


def _messages(body: Mapping[str, Any]) -> list[dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list of {role, content} objects", "messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise ApiError(400, f"messages[{i}] must be an object with 'role' and 'content'", "messages")
        role = m.get("role")
        if role not in _ROLES:
            raise ApiError(400, f"messages[{i}].role {role!r} is not supported (use one of: {', '.join(_ROLES)})",
                           "messages")
        # "developer" is OpenAI's newer name for the system message; chat templates know "system".
        out.append({"role": "system" if role == "developer" else role, "content": _content(m, i)})
    return out


def _selection(body: Mapping[str, Any], header_policy: str | None) -> tuple[str | None, list[tuple[str, float]] | None]:
    policy = body.get("policy")
    if policy is not None and not isinstance(policy, str):
        raise ApiError(400, f"'policy' must be a policy name (got {policy!r})", "policy")
    if header_policy:
        if policy is not None and policy != header_policy:
            raise ApiError(400, f"the X-Sgedge-Policy header ({header_policy!r}) and the body's 'policy' "
                           f"({policy!r}) disagree", "policy")
        policy = header_policy
    adapters = body.get("adapters")
    if adapters is None:
        return policy, None
    if policy is not None:
        raise ApiError(400, "give either 'policy' or 'adapters', not both", "adapters")
    if not isinstance(adapters, list):
        raise ApiError(400, "'adapters' must be a list of adapter names or {name, scale} objects ([] = bare base)",
                       "adapters")
    out = []
    for a in adapters:
        if isinstance(a, str):
            out.append((a, 1.0))
        elif isinstance(a, Mapping) and isinstance(a.get("name"), str):
            out.append((a["name"], _number(a, "scale", float, 1.0)))
        else:
            raise ApiError(400, f"'adapters' entries are names or {{name, scale}} objects (got {a!r})", "adapters")
    return None, out


def parse_request(kind: str, body: Any, *, header_policy: str | None = None) -> Request:
    """Check an OpenAI chat/completions body and turn it into a Request (raises ApiError)."""
    if not isinstance(body, Mapping):
        raise ApiError(400, "the request body must be a JSON object")
    for key, what in _UNSUPPORTED.items():
        if body.get(key) not in (None, False, [], {}):
            raise ApiError(400, f"'{key}' is not supported by sgedge serve ({what})", key)
    if _number(body, "n", int, 1, 1, 128) != 1:
        raise ApiError(400, "'n' must be 1: sgedge serve returns one choice per request", "n")
    for key, neutral in _NEUTRAL.items():
        if _number(body, key, float, neutral) != neutral:
            raise ApiError(400, f"'{key}' is not supported by sgedge serve (leave it out, or at {neutral:g})", key)
    try:
        parse_response_format(body.get("response_format"))  # checked here, applied by the runtime
    except InputError as e:
        raise ApiError(400, str(e), "response_format") from None
    if kind == "chat":
        prompt: str | list[dict[str, str]] = _messages(body)
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str) or not prompt:
            raise ApiError(400, "'prompt' must be a non-empty string (one prompt per request)", "prompt")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    sampling = {
        # None: not asked for; the server fills in its default, cut to the room the prompt leaves.
        "max_tokens": _number({"max_tokens": max_tokens}, "max_tokens", int, None, 1, 1 << 31),
        # Greedy unless asked: the server answers like `sgedge run` (and like `sgedge eval` measures).
        "temperature": _number(body, "temperature", float, 0.0, 0, 2),
        "top_p": _number(body, "top_p", float, 1.0, 0, 1),
        "top_k": _number(body, "top_k", int, 0, 0, 1 << 31),
        "seed": _number(body, "seed", int, 0, -(1 << 63), (1 << 64) - 1),
        # llama.cpp server's extension (Hugging Face's repetition_penalty): 1 = off.
        "repeat_penalty": _number(body, "repeat_penalty", float, 1.0, 0, MAX_REPEAT_PENALTY),
        # llama.cpp server's extension: generate max_tokens whatever the model says (benchmarks).
        "ignore_eos": _flag(body, "ignore_eos"),
    }
    if sampling["repeat_penalty"] <= 0:
        raise ApiError(400, "'repeat_penalty' must be above 0 (1 = off)", "repeat_penalty")
    try:
        stop = check_stops(body.get("stop"))
    except InputError as e:
        raise ApiError(400, f"'stop': {e}", "stop") from None
    options = body.get("stream_options") or {}
    if not isinstance(options, Mapping):
        raise ApiError(400, "'stream_options' must be an object", "stream_options")
    template_kwargs = body.get("chat_template_kwargs")
    if template_kwargs is not None and (kind != "chat" or not isinstance(template_kwargs, Mapping)):
        raise ApiError(400, "'chat_template_kwargs' is an object of chat template variables, for chat requests",
                       "chat_template_kwargs")
    model = body.get("model")
    policy, adapters = _selection(body, header_policy)
    if body.get("response_format") not in (None, {}):
        sampling["response_format"] = body["response_format"]
    return Request(kind, prompt, sampling, stop, bool(body.get("stream")), bool(options.get("include_usage")),
                   model if isinstance(model, str) else None, policy, adapters,
                   dict(template_kwargs) if template_kwargs else None)


def _sgedge(result: GenerationResult, policy: str | None) -> dict[str, Any]:
    return {"policy": policy, "adapters": [{"name": a.name, "scale": a.scale} for a in result.adapters],
            "bundle": result.bundle, "backend": result.backend, "mode": result.mode,
            "timings": result.timings.as_dict()}


def usage(result: GenerationResult) -> dict[str, Any]:
    p, c = len(result.prompt_tokens), len(result.tokens)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c,
            "prompt_tokens_details": {"cached_tokens": result.timings.cached_tokens}}


def response(req: Request, model: str, result: GenerationResult, policy: str | None) -> dict[str, Any]:
    """The whole reply (stream=false)."""
    if req.kind == "chat":
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": result.text},
                                  "finish_reason": result.finish_reason, "logprobs": None}
        obj, prefix = "chat.completion", "chatcmpl-"
    else:
        choice = {"index": 0, "text": result.text, "finish_reason": result.finish_reason, "logprobs": None}
        obj, prefix = "text_completion", "cmpl-"
    return {"id": prefix + req.id, "object": obj, "created": req.created, "model": model, "choices": [choice],
            "usage": usage(result), "sgedge": _sgedge(result, policy)}


def chunk(req: Request, model: str, text: str | None = None, *, role: bool = False,
          finish_reason: str | None = None) -> dict[str, Any]:
    """One streamed event (stream=true)."""
    if req.kind == "chat":
        delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
        if text is not None:
            delta["content"] = text
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        obj, prefix = "chat.completion.chunk", "chatcmpl-"
    else:
        choice = {"index": 0, "text": text or "", "finish_reason": finish_reason, "logprobs": None}
        obj, prefix = "text_completion", "cmpl-"
    return {"id": prefix + req.id, "object": obj, "created": req.created, "model": model, "choices": [choice]}


def final_chunks(req: Request, model: str, result: GenerationResult, policy: str | None) -> list[dict[str, Any]]:
    """The events that end a stream: the finish reason (with sgedge's fields), then usage if asked."""
    last = chunk(req, model, finish_reason=result.finish_reason)
    last["sgedge"] = _sgedge(result, policy)
    out = [last]
    if req.include_usage:
        tail = chunk(req, model)
        tail["choices"], tail["usage"] = [], usage(result)
        out.append(tail)
    return out
