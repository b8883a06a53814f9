"""OpenAPI post-processing: every operation documents the error answers it can give, all in
the one shape the error handler writes: `{"detail": "..."}` (400 may add per-field errors)."""

ERROR = {
    "type": "object",
    "properties": {"detail": {"type": "string"},
                   "retry_after": {"type": "integer", "description": "503 only: seconds to wait"}},
    "required": ["detail"],
    "additionalProperties": True,  # a 400 may carry field errors or per-file reasons
}
REASONS = {
    "400": "the request is not valid: the detail (and field errors) say why",
    "401": "not logged in (no session, no or a wrong token)",
    "403": "logged in, but this needs another role",
    "404": "no such object, or not visible to you",
    "405": "this method is not allowed here",
    "409": "the state changed: nothing was written",
    "503": "the database or the task broker is away for a moment: retry after `retry_after` seconds",
}


def document_errors(result, generator, request, public):
    """POSTPROCESSING_HOOKS entry: add the error answers each operation may give."""
    result.setdefault("components", {}).setdefault("schemas", {}).setdefault("Error", ERROR)
    ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            codes = ["401", "403", "503"]
            names = {p.get("name") for p in operation.get("parameters", [])}
            if "{" in path or "page" in names:  # DRF answers 404 for a page past the end
                codes.append("404")
            if method in ("post", "put", "patch") or operation.get("parameters"):
                codes.append("400")
            if method == "post":
                codes.append("409")
            responses = operation.setdefault("responses", {})
            for code in codes:
                responses.setdefault(code, {"description": REASONS[code], "content": ref})
    return result
