"""The AsyncAPI 3.0 document of the relay's Kafka topics, generated into ``schemas/asyncapi.json``.

It owns the one view of the relay's topics as an API: which topics there are (channels, at
their default names; every name is set by an environment variable), what is on each
(messages, their keys and headers), and which the relay reads or writes (operations, from the
relay's point of view). Message payloads are the pydantic models of ``service.messages``,
rendered into ``components/schemas`` so every ``$ref`` resolves inside the document. Two shapes
have no model and are written here: the dead-letter headers (the value is the original
record's, untouched) and the ledger entry (``service.adapters.ledger_codec``), which is the
relay's own and marked internal.

The models are a parameter (``WireModels``), so a test can generate from a drifted model and
see the rendering change. ``service.schemas`` writes and checks the file with the JSON Schemas.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal, get_args

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from service.config import Settings
from service.core.ledger import ENTRY_STATES
from service.decoding import RejectReason
from service.messages import CancelRequest, ProgressEvent, ResultEvent, VideoRequest

FILE_NAME = "asyncapi.json"
_SCHEMAS = "#/components/schemas/"
_KAFKA_BINDING = "0.5.0"  # the Kafka bindings' version for AsyncAPI 3.0
_PUBLIC = {"name": "public", "description": "Part of the contract: upstream services rely on it."}
_INTERNAL = {
    "name": "internal",
    "description": "The relay's own, not a public interface: it may change in any release.",
}


@dataclass(frozen=True, slots=True)
class WireModels:
    """The pydantic models the document is made of (the defaults are the real ones)."""

    request: type[BaseModel] = VideoRequest
    cancel: type[BaseModel] = CancelRequest
    result: type[BaseModel] = ResultEvent
    progress: type[BaseModel] = ProgressEvent


WIRE_MODELS = WireModels()


def asyncapi_document(models: WireModels = WIRE_MODELS) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the relay's topics, as a JSON-ready dict."""
    payloads, schemas = _model_schemas(models)
    for name, schema in _HAND_WRITTEN_SCHEMAS.items():
        if name in schemas:
            raise ValueError(f"a model named {name} collides with a hand-written schema")
        schemas[name] = schema
    document = {
        "asyncapi": "3.0.0",
        "id": "urn:lynx-relay:asyncapi:v1",
        "info": {
            "title": "lynx-relay",
            "version": "1",
            "description": "The Kafka topics of lynx-relay, which turns video requests into fal.ai "
            "Lynx jobs and publishes their results. Operations are the relay's: it receives "
            "requests and cancels, and sends results, progress events, dead letters and its "
            "ledger entries. Channel addresses are the default topic names; each is set by the "
            "environment variable its channel names. Values are UTF-8 JSON unless said otherwise.",
            "tags": [_PUBLIC, _INTERNAL],
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": "localhost:9092",
                "protocol": "kafka",
                "description": "The default of KAFKA_BOOTSTRAP_SERVERS (a comma-separated "
                "host:port list); KAFKA_SECURITY_PROTOCOL and KAFKA_SASL_* set the transport "
                "and authentication.",
            }
        },
        "channels": _channels(),
        "operations": _operations(),
        "components": {"schemas": schemas, "messages": _messages(payloads)},
    }
    # The tags and hand-written schemas are module constants: hand out a copy of them.
    return copy.deepcopy(document)


def _model_schemas(models: WireModels) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Each message's payload (a ``$ref``) and the schemas of every model, shared by name.

    Requests are described as the relay validates them, events as the relay writes them.
    """
    modes: dict[str, tuple[type[BaseModel], JsonSchemaMode]] = {
        "videoRequest": (models.request, "validation"),
        "cancelRequest": (models.cancel, "validation"),
        "resultEvent": (models.result, "serialization"),
        "progressEvent": (models.progress, "serialization"),
    }
    refs, top = models_json_schema(list(modes.values()), ref_template=_SCHEMAS + "{model}")
    payloads = {message: dict(refs[pair]) for message, pair in modes.items()}
    return payloads, dict(top.get("$defs", {}))


def _setting(field: str) -> tuple[str, Any]:
    """A setting's environment variable and default, read from the class (not the
    environment), so a changed default shows as drift."""
    return field.upper(), Settings.model_fields[field].default


def _channel(
    field: str, title: str, what: str, messages: list[str], *, internal: bool = False
) -> dict[str, Any]:
    env, topic = _setting(field)
    where = (
        f"Topic `{topic}` by default; set by {env}."
        if topic is not None
        else f"Set by {env}; unset by default, and then nothing is written."
    )
    channel: dict[str, Any] = {
        "address": topic,
        "title": title,
        "description": f"{what} {where}",
        "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in messages},
        "tags": [_INTERNAL if internal else _PUBLIC],
    }
    if topic is not None:
        channel["bindings"] = {"kafka": {"topic": topic, "bindingVersion": _KAFKA_BINDING}}
    return channel


def _channels() -> dict[str, Any]:
    ledger = _channel(
        "relay_jobs_topic",
        "Job ledger (internal)",
        "Internal: the relay's own job ledger, not a public interface; its format may change "
        "in any release. Keyed by request_id (or the source position of a rejected message), "
        "compacted; a null value is a tombstone. Read in full by every replica "
        "(read_committed).",
        ["ledgerEntry"],
        internal=True,
    )
    _, retention_s = _setting("relay_dedupe_retention_s")
    # How the relay creates the topic when it is missing (RELAY_CREATE_JOBS_TOPIC).
    ledger["bindings"]["kafka"]["topicConfiguration"] = {
        "cleanup.policy": ["compact", "delete"],
        "retention.ms": int(retention_s * 1000),
    }
    return {
        "requests": _channel(
            "relay_requests_topic",
            "Requests",
            "Video requests, and cancels of them (a cancel is keyed like its request, so it "
            "lands in the same partition, behind it).",
            ["videoRequest", "cancelRequest"],
        ),
        "results": _channel(
            "relay_results_topic",
            "Result events",
            "Exactly one terminal event per accepted request_id, keyed by it (the topic may be "
            "compacted: a requester can read its result back).",
            ["resultEvent"],
        ),
        "progress": _channel(
            "relay_progress_topic",
            "Progress events",
            "Optional, best-effort progress of a job, keyed by request_id.",
            ["progressEvent"],
        ),
        "deadLetters": _channel(
            "relay_dead_letter_topic",
            "Dead letters",
            "Messages of the requests topic that cannot be accepted, copied with their key, "
            "value and headers untouched, plus headers saying why and where from.",
            ["deadLetter"],
        ),
        "ledger": ledger,
    }


def _key(description: str, **schema: Any) -> dict[str, Any]:
    return {
        "kafka": {"key": {"description": description, **schema}, "bindingVersion": _KAFKA_BINDING}
    }


_REQUEST_SAMPLE = {
    "request_id": "order-8841",
    "input": {
        "image_url": "https://example.com/subject.png",
        "prompt": "A person carves a pumpkin on a porch in the evening ...",
    },
    "metadata": {"tenant": "acme", "anything": ["echoed", "back"]},
}


def _messages(payloads: dict[str, dict[str, Any]]) -> dict[str, Any]:
    string = {"type": "string"}
    return {
        "videoRequest": {
            "name": "videoRequest",
            "title": "Video request",
            "summary": "A video-generation request; request_id is its idempotency key.",
            "payload": payloads["videoRequest"],
            "bindings": _key("Free; producers should use the request_id (UTF-8).", **string),
            "examples": [{"name": "contract-sample", "payload": _REQUEST_SAMPLE}],
            "tags": [_PUBLIC],
        },
        "cancelRequest": {
            "name": "cancelRequest",
            "title": "Cancel",
            "summary": "Cancels the request of that request_id (it gets a cancelled result).",
            "payload": payloads["cancelRequest"],
            "bindings": _key("The request_id, like the request's own key (UTF-8).", **string),
            "examples": [
                {"name": "cancel", "payload": {"request_id": "order-8841", "action": "cancel"}}
            ],
            "tags": [_PUBLIC],
        },
        "resultEvent": {
            "name": "resultEvent",
            "title": "Result event",
            "summary": "The one terminal event of an accepted request.",
            "payload": payloads["resultEvent"],
            "bindings": _key("The request_id (UTF-8).", **string),
            "tags": [_PUBLIC],
        },
        "progressEvent": {
            "name": "progressEvent",
            "title": "Progress event",
            "summary": "queued (with the queue position), started, or one of fal's log lines.",
            "payload": payloads["progressEvent"],
            "bindings": _key("The request_id (UTF-8).", **string),
            "tags": [_PUBLIC],
        },
        "deadLetter": {
            "name": "deadLetter",
            "title": "Dead letter",
            "summary": "A copy of a message that cannot be accepted, with why in its headers.",
            "contentType": "application/octet-stream",
            "headers": {"$ref": _SCHEMAS + "DeadLetterHeaders"},
            "payload": {
                "description": "The original record's value, byte for byte: not necessarily "
                "JSON, nor UTF-8. Null when the copy with its headers would not fit one record "
                "(then x-relay-value-omitted says so)."
            },
            "bindings": _key("The original record's key, untouched (any bytes, or none)."),
            "tags": [_PUBLIC],
        },
        "ledgerEntry": {
            "name": "ledgerEntry",
            "title": "Ledger entry (internal)",
            "summary": "A job's state in the relay's own ledger (internal); null: a tombstone.",
            "payload": {"anyOf": [{"$ref": _SCHEMAS + "LedgerEntry"}, {"type": "null"}]},
            "bindings": _key(
                "The request_id, or source:<topic>:<partition>:<offset> for a rejected message.",
                **string,
            ),
            "tags": [_INTERNAL],
        },
    }


def _operation(
    action: Literal["send", "receive"],
    channel: str,
    message: str,
    summary: str,
    *,
    group: bool = False,
    internal: bool = False,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel}"},
        "summary": summary,
        "messages": [{"$ref": f"#/channels/{channel}/messages/{message}"}],
        "tags": [_INTERNAL if internal else _PUBLIC],
    }
    if group:
        env, default = _setting("relay_group_id")
        group_id = {"type": "string", "default": default, "description": f"Set by {env}."}
        operation["bindings"] = {"kafka": {"groupId": group_id, "bindingVersion": _KAFKA_BINDING}}
    return operation


def _operations() -> dict[str, Any]:
    written = "in a Kafka transaction with its ledger entry (acks=all)"
    return {
        "receiveRequest": _operation(
            "receive",
            "requests",
            "videoRequest",
            "The relay consumes requests; an offset is committed only after the request's "
            "result event (or dead-letter copy) is written.",
            group=True,
        ),
        "receiveCancel": _operation(
            "receive", "requests", "cancelRequest", "The relay consumes cancels.", group=True
        ),
        "sendResult": _operation(
            "send", "results", "resultEvent", f"The relay publishes a result {written}."
        ),
        "sendProgress": _operation(
            "send",
            "progress",
            "progressEvent",
            "The relay publishes progress, best effort (never retried at the cost of results).",
        ),
        "sendDeadLetter": _operation(
            "send", "deadLetters", "deadLetter", f"The relay copies a rejected message {written}."
        ),
        "sendLedgerEntry": _operation(
            "send",
            "ledger",
            "ledgerEntry",
            "The relay records a job's state (internal).",
            internal=True,
        ),
        "receiveLedgerEntry": _operation(
            "receive",
            "ledger",
            "ledgerEntry",
            "Every replica reads the whole ledger and follows it (internal).",
            internal=True,
        ),
    }


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


_TIME = {"type": "string", "format": "date-time"}
_STRING = {"type": "string"}
_NUMBER = {"type": "number"}
_FAL_REF = ("request_id", "status_url", "response_url", "cancel_url")

# No models for these: a dead letter's value is the original record's, and the ledger's format
# is the codec's (service.adapters.ledger_codec, which this module does not import: adapters
# are the composition root's). A test reads an encoded entry back against this schema.
_HAND_WRITTEN_SCHEMAS: dict[str, dict[str, Any]] = {
    "DeadLetterHeaders": {
        "title": "DeadLetterHeaders",
        "description": "The original record's headers, untouched, plus these (UTF-8 values).",
        "type": "object",
        "properties": {
            "x-relay-error-code": {"type": "string", "enum": list(get_args(RejectReason))},
            "x-relay-error-message": {
                "type": "string",
                "maxLength": 1000,
                "description": "What was wrong, with the failing fields.",
            },
            "x-relay-source-topic": _STRING,
            "x-relay-source-partition": {"type": "string", "pattern": "^[0-9]+$"},
            "x-relay-source-offset": {"type": "string", "pattern": "^[0-9]+$"},
            "x-relay-value-omitted": {
                "type": "string",
                "description": "Present when the value was left out: too large with the "
                "headers, e.g. 'too large: 1048600 bytes'.",
            },
        },
        "required": [
            "x-relay-error-code",
            "x-relay-error-message",
            "x-relay-source-topic",
            "x-relay-source-partition",
            "x-relay-source-offset",
        ],
    },
    "LedgerEntry": {
        "title": "LedgerEntry",
        "description": "Internal: the relay's own record format (service.adapters.ledger_codec), "
        "not a public interface. Fields after `at` are written when known; older records may "
        "lack them, and readers ignore fields they do not know.",
        "type": "object",
        "properties": {
            "v": {"const": 1},
            "state": {"type": "string", "enum": list(ENTRY_STATES)},
            "writer": {"type": "string", "description": "The process that wrote it."},
            "source": {
                "type": "object",
                "description": "The requests-topic record the entry is about.",
                "properties": {
                    "topic": _STRING,
                    "partition": {"type": "integer", "minimum": 0},
                    "offset": {"type": "integer", "minimum": 0},
                },
                "required": ["topic", "partition", "offset"],
            },
            "at": _TIME,
            "fal": _nullable(
                {
                    "type": "object",
                    "description": "The job at fal: its id and URLs.",
                    "properties": dict.fromkeys(_FAL_REF, _STRING),
                    "required": list(_FAL_REF),
                }
            ),
            "received_at": _nullable(_TIME),
            "metadata": _nullable({"type": "object"}),
            "deadline": _nullable(_TIME),
            "status": _nullable(_STRING),
            "shape": _nullable(_STRING),
            "run_s": _nullable(_NUMBER),
            "tenant": _nullable(_STRING),
            "digest": _nullable(_STRING),
            "fal_request_id": _nullable(_STRING),
            "units": _nullable(_NUMBER),
            "amount": _nullable(_NUMBER),
        },
        "required": ["v", "state", "writer", "source", "at"],
    },
}
