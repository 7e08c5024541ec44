"""Each service's OpenAPI document says what it really answers: errors are RFC 9457 problems (not FastAPI's
default validation shape), a secured route may answer 401 or 403, and a route with a body may answer 413."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

PROBLEM_JSON = "application/problem+json"

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "RFC 9457 problem details with a stable `code`.",
    "required": ["type", "title", "status", "code", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "code": {"type": "string", "examples": ["validation_failed"]},
        "detail": {"type": "string"},
        "trace_id": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "field": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def document_problems(app: FastAPI) -> None:
    """Rewrite the app's generated document once, when first asked for it."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        document = generate()
        document.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                if "422" in responses:
                    responses["422"] = _problem("Validation failed; `errors` names each field.")
                if operation.get("security"):
                    responses.setdefault("401", _problem("Missing, expired or foreign bearer token."))
                    responses.setdefault("403", _problem("The token's roles are not among those this route admits."))
                if "requestBody" in operation:
                    responses.setdefault("413", _problem("Request body over the size limit."))
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
