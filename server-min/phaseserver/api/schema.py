"""The subset of JSON Schema (2020-12) the API declares, and the validator that holds requests to it.

Every route's query parameters and body are declared once as JSON Schema;
the same dicts go into the OpenAPI 3.1 document (whose Schema Object is
JSON Schema 2020-12) and into ``validate`` here, so what the document says
is what the server accepts. The one thing to know: only the keywords in
``KEYWORDS`` may appear (``check_schema`` refuses others when a route is
declared), so the validator never silently ignores a rule the document
shows. Errors name the place (``body.limits.i_max_mA``) and never quote
more than a few characters of the input.
"""

import math
import re
from typing import Any

from phasecore.errors import quote
from phaseserver.errors import ServerError

__all__ = ("SchemaViolation", "validate", "check_schema", "bound_integers", "KEYWORDS", "coerce_query", "INT64")

# Every integer the API takes is a signed 64-bit one (what both databases store): a declared integer
# without bounds gets these (bound_integers), in the document as well as in the check.
INT64 = (-(2**63), 2**63 - 1)

KEYWORDS = frozenset(
    (
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "maxItems",
        "minItems",
        "enum",
        "const",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "pattern",
        "format",
        "description",
        "oneOf",
        "title",
        "examples",
    )
)
_TYPES = ("object", "array", "string", "integer", "number", "boolean", "null")
_QUOTE = 24


class SchemaViolation(ServerError, ValueError):
    """Input that breaks its declared schema; ``where`` names the place."""

    def __init__(self, where: str, what: str):
        ValueError.__init__(self, "%s %s" % (where, what))
        self.where = where


def _quote(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= _QUOTE else s[:_QUOTE] + "..."


def check_schema(schema: dict, where: str = "schema") -> dict:
    """``schema`` if it uses only KEYWORDS (recursively); ValueError naming the keyword otherwise."""
    if not isinstance(schema, dict):
        raise ValueError("%s: a schema is a dict" % where)
    for k, v in schema.items():
        if k not in KEYWORDS:
            raise ValueError("%s: keyword %s is not supported by phaseserver.api.schema" % (where, quote(k)))
        if k == "properties":
            for name, sub in v.items():
                check_schema(sub, "%s.%s" % (where, name))
        elif k == "items" or (k == "additionalProperties" and isinstance(v, dict)):
            check_schema(v, where + "[]")
        elif k == "oneOf":
            for i, sub in enumerate(v):
                check_schema(sub, "%s|%d" % (where, i))
        elif k == "pattern" and not (v.startswith("^") and v.endswith("$")):
            # Matched whole (re.fullmatch): Python's "$" also matches before a final newline, ECMA 262's does not.
            raise ValueError("%s: pattern %s must be anchored with ^...$" % (where, quote(v)))
        elif k == "type":
            for t in v if isinstance(v, list) else [v]:
                if t not in _TYPES:
                    raise ValueError("%s: unknown type %s" % (where, quote(t)))
    return schema


def bound_integers(schema: dict) -> dict:
    """A copy of ``schema`` where every integer without ``minimum``/``maximum`` gets the int64 bounds."""
    out = dict(schema)
    t = out.get("type")
    if t == "integer" or (isinstance(t, list) and "integer" in t):
        out.setdefault("minimum", INT64[0])
        out.setdefault("maximum", INT64[1])
    if "properties" in out:
        out["properties"] = {k: bound_integers(v) for k, v in out["properties"].items()}
    if isinstance(out.get("items"), dict):
        out["items"] = bound_integers(out["items"])
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = bound_integers(out["additionalProperties"])
    if "oneOf" in out:
        out["oneOf"] = [bound_integers(x) for x in out["oneOf"]]
    return out


def _type_ok(t: str, v: Any) -> bool:
    if t == "object":
        return isinstance(v, dict)
    if t == "array":
        return isinstance(v, list)
    if t == "string":
        return isinstance(v, str)
    if t == "integer":
        return (isinstance(v, int) and not isinstance(v, bool)) or (
            isinstance(v, float) and math.isfinite(v) and v.is_integer()
        )
    if t == "number":
        return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)
    if t == "boolean":
        return isinstance(v, bool)
    return v is None


def validate(value: Any, schema: dict, where: str = "body") -> None:
    """Raise SchemaViolation if ``value`` breaks ``schema``."""
    if "oneOf" in schema:
        matched = 0
        for sub in schema["oneOf"]:
            try:
                validate(value, sub, where)
            except SchemaViolation:
                continue
            matched += 1
        if matched != 1:
            raise SchemaViolation(where, "matches %d of the allowed forms, not exactly one" % matched)
    t = schema.get("type")
    if t is not None:
        types = t if isinstance(t, list) else [t]
        if not any(_type_ok(x, value) for x in types):
            raise SchemaViolation(where, "must be %s, not %s" % (" or ".join(types), type(value).__name__))
    if "const" in schema and value != schema["const"]:
        raise SchemaViolation(where, "must be %s" % _quote(schema["const"]))
    if "enum" in schema and value not in schema["enum"]:
        raise SchemaViolation(where, "%s is not one of %s" % (_quote(value), ", ".join(map(str, schema["enum"]))))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise SchemaViolation(where, "%s is below %s" % (_quote(value), schema["minimum"]))
        if "maximum" in schema and value > schema["maximum"]:
            raise SchemaViolation(where, "%s is above %s" % (_quote(value), schema["maximum"]))
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            raise SchemaViolation(where, "is shorter than %d characters" % schema["minLength"])
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise SchemaViolation(where, "is longer than %d characters" % schema["maxLength"])
        if "pattern" in schema and not re.fullmatch(schema["pattern"], value):
            raise SchemaViolation(where, "%s does not match %s" % (_quote(value), schema["pattern"]))
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            raise SchemaViolation(where, "has fewer than %d items" % schema["minItems"])
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise SchemaViolation(where, "has more than %d items" % schema["maxItems"])
        if "items" in schema:
            for i, item in enumerate(value):
                validate(item, schema["items"], "%s[%d]" % (where, i))
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", ()):
            if name not in value:
                raise SchemaViolation("%s.%s" % (where, name), "is required")
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            if name in props:
                validate(item, props[name], "%s.%s" % (where, name))
            elif extra is False:
                raise SchemaViolation(where, "has an unknown field %s" % _quote(name))
            elif isinstance(extra, dict):
                validate(item, extra, "%s.%s" % (where, _quote(name)))


def coerce_query(raw: str, schema: dict, where: str) -> Any:
    """A query parameter's text as the type its schema declares (integer, number, boolean or string)."""
    t = schema.get("type", "string")
    types = t if isinstance(t, list) else [t]
    if len(raw) > 200:
        raise SchemaViolation(where, "is longer than 200 characters")
    if "integer" in types:
        if re.fullmatch(r"-?[0-9]{1,19}", raw):
            return int(raw)
        if types == ["integer"]:
            raise SchemaViolation(where, "%s is not an integer" % _quote(raw))
    if "number" in types:
        try:
            v = float(raw)
        except ValueError:
            v = math.nan
        if math.isfinite(v):
            return v
        if "string" not in types:
            raise SchemaViolation(where, "%s is not a finite number" % _quote(raw))
    if "boolean" in types:
        if raw in ("true", "false"):
            return raw == "true"
        if "string" not in types:
            raise SchemaViolation(where, "%s is not true or false" % _quote(raw))
    return raw
