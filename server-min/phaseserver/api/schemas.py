"""JSON Schemas the routes share: identifiers, times, the error body, and the objects the API returns.

One place for what several routes declare, so the OpenAPI document and the
validator (``phaseserver.api.schema``) agree everywhere. The one thing to
know: patterns are anchored (``^...$``) and every text has a maxLength, so
nothing a client sends is unbounded.
"""

from typing import Any

from phaseserver.auth.accounts import NAME_PATTERN
from phaseserver.auth.roles import ROLES

__all__ = (
    "ID",
    "SITE",
    "TRANSFORMER",
    "TIME",
    "ERROR",
    "NULLABLE_NUMBER",
    "NULLABLE_INT",
    "NULLABLE_TEXT",
    "ACCOUNT_NAME",
    "ROLE",
    "obj",
    "array",
    "TX_PATH",
)

# Site and transformer ids: the gateway's own rule (phaseconf.ident), one MQTT topic level each.
ID = {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,32}$", "maxLength": 32}
SITE = dict(ID, description="site id ([site] id of its Pis)")
TRANSFORMER = dict(ID, description="transformer id ([site] transformer of its Pi)")
TX_PATH = {"site": SITE, "transformer": TRANSFORMER}
TIME = {"type": "integer", "minimum": 0, "maximum": 4294967295, "description": "Unix seconds"}
NULLABLE_NUMBER = {"type": ["number", "null"]}
NULLABLE_INT = {"type": ["integer", "null"]}
NULLABLE_TEXT = {"type": ["string", "null"]}
ACCOUNT_NAME = {"type": "string", "pattern": NAME_PATTERN, "maxLength": 64}
ROLE = {"type": "string", "enum": list(ROLES)}


def obj(props: dict[str, Any], required: list[str] | None = None, extra: bool = False) -> dict[str, Any]:
    """An object schema: ``props``, all required unless ``required`` says which; no other fields unless ``extra``."""
    return {
        "type": "object",
        "properties": props,
        "required": list(props) if required is None else required,
        "additionalProperties": extra,
    }


def array(items: dict[str, Any], max_items: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "array", "items": items}
    if max_items is not None:
        out["maxItems"] = max_items
    return out


ERROR = obj({"error": {"type": "string"}, "detail": {"type": "string"}})
