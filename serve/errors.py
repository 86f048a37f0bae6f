"""One mapping from the engines' InputError (field, message, allowed) to an HTTP 4xx, for every app."""
from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


def add_input_error_handler(app: FastAPI, error_type: type[Exception]) -> None:
    """Answer `error_type` with its status_code (422 by default) and {field, message, allowed}."""

    async def _input_error(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(status_code=getattr(exc, "status_code", 422),
                            content={"detail": {"field": exc.field, "message": str(exc), "allowed": exc.allowed}})

    app.add_exception_handler(error_type, _input_error)
