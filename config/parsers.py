"""The project's JSON parser (REST_FRAMEWORK's DEFAULT_PARSER_CLASSES)."""

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from config.untrusted import json_problem


def _json_type(value: object) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


class JSONObjectParser(JSONParser):
    """DRF's JSON parser, refusing with a 400 what no endpoint can take: a body that is not an object,
    nesting too deep, and values no column can store (config.untrusted names the field)."""

    def parse(self, stream, media_type=None, parser_context=None) -> dict:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the body is nested too deeply") from None
        if not isinstance(data, dict):
            raise ParseError(f"JSON parse error - the body must be a JSON object, not {_json_type(data)}")
        problem = json_problem(data)
        if problem:
            field, reason = problem
            raise ParseError(f"JSON parse error - field '{field}' {reason}")
        return data
