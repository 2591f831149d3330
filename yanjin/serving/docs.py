"""yanjin's own API documentation: the OpenAPI document and the Swagger UI people try the server in.

BentoML generates the paths and schemas from the service; what it adds around them is its own
(title "yanjin:dev", version "None", "Contact BentoML Team", a page that loads Google Tag Manager and
a GitHub badge from the internet). `DocsPages` answers `/`, `/docs` and `/docs.json` instead: the
project's name, version, description and contact from its package metadata, the bearer and API-key
schemes the Authenticator accepts (so "Authorize" works), every status the middlewares answer with a
real example, and a page that loads only the Swagger UI files BentoML ships with the server.
"""
from __future__ import annotations

import copy
import json
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, metadata
from typing import Callable

DOCS_PATHS = ("/", "/docs", "/docs.json")
BEARER, API_KEY = "bearer", "apiKey"
KEYED = [{BEARER: []}, {API_KEY: []}]          # either scheme; the same token
ERROR_SCHEMA = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}


def _error(description: str, example: str, retry_after: bool = False) -> dict:
    response = {"description": description,
                "content": {"application/json": {"schema": ERROR_SCHEMA, "example": {"error": example}}}}
    if retry_after:
        response["headers"] = {"Retry-After": {"description": "seconds to wait before trying again",
                                               "schema": {"type": "integer"}, "example": 1}}
    return response


# what the middlewares (serving/guard.py, serving/auth.py) and the service answer, with their own wording
ERRORS = {
    "400": _error("the request's content is refused (e.g. an unknown label)",
                  "unknown label 'card_arival'; the model knows 77 labels, e.g. ['activate_my_card', ...]"),
    "401": _error("no API key, or an unknown one", "/review needs an API key (Authorization: Bearer <token>)"),
    "403": _error("the key's role may not call this route", "key 'crm-app' (client) may not call /review; it needs "
                  "a reviewer's key"),
    "404": _error("no such prediction", "no prediction with id '3f2b8c1e-6a0d-4c7e-9f51-2d8e7b4a9c10'"),
    "413": _error("the body or a text is over its limit", "request body exceeds the 1000000-byte limit"),
    "415": _error("not JSON", "content type 'text/plain' is not accepted; send application/json"),
    "422": _error("the JSON does not match the schema", "text has 2400 characters; the limit is 2000"),
    "429": _error("the key's rate limit is spent", "key 'crm-app': rate limit of 600 requests a minute spent; "
                  "retry after 2 s", retry_after=True),
    "503": _error("busy, or no verified model loaded yet", "server busy: 256 requests in flight (limit 256); "
                  "retry after 1 s", retry_after=True),
}
ROUTE_ERRORS = {  # which of them each route can answer
    "/predict": ["401", "413", "415", "422", "429", "503"],
    "/feedback": ["400", "401", "403", "404", "413", "415", "422", "429"],
    "/review": ["400", "401", "403", "404", "413", "415", "422", "429"],
    "/info": ["401", "403", "429"],
}


def project() -> dict:
    """Name, version, summary and contact as the installed package declares them (pyproject.toml)."""
    try:
        meta = metadata("yanjin")
    except PackageNotFoundError:
        return {"version": "unknown", "summary": "", "author": "yanjin maintainers"}
    return {"version": meta["Version"], "summary": meta["Summary"] or "",
            "author": meta["Author"] or (meta["Author-email"] or "yanjin maintainers").split("<")[0].strip()}


def openapi(generated: dict, model: str, open_predict: bool, max_chars: int, review_threshold: float) -> dict:
    """BentoML's document with yanjin's info, security and errors; `generated` is left as it was."""
    doc, about = copy.deepcopy(generated), project()
    doc["info"] = {
        "title": f"yanjin serving: {model}",
        "version": about["version"],
        "description": (
            f"{about['summary']}.\n\nThis server answers with `{model}@champion` (and `@challenger` while a rollout "
            f"runs), loaded from the MLflow registry after its sha256 was checked. `POST /predict` classifies up to "
            f"{max_chars} characters per text; the model reads a limited number of tokens, and an answer that read "
            f"only part of its text says `truncated: true` and goes to review, as do answers below confidence "
            f"{review_threshold}.\n\n"
            + ("`/predict` is open on this server (no key needed); " if open_predict else
               "Every route needs an API key; ")
            + "`/feedback` needs a client's key, `/review` a reviewer's (`yanjin keys add NAME --role ...`). "
              "Press **Authorize** and paste the token once: as `Authorization: Bearer <token>` or `X-API-Key`."),
        "contact": {"name": about["author"]},
        "license": {"name": "Apache-2.0"},
    }
    about_tags = {"Service APIs": "classify texts, label predictions, see what is served",
                  "Infrastructure": "probes for Kubernetes and the Prometheus metrics"}
    doc["tags"] = [t | {"description": about_tags.get(t.get("name"), t.get("description", ""))} for t in doc.get("tags", [])]
    doc.setdefault("components", {})["securitySchemes"] = {
        BEARER: {"type": "http", "scheme": "bearer", "description": "an API key from `yanjin keys add`"},
        API_KEY: {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "the same key, as a header"},
    }
    for route, codes in ROUTE_ERRORS.items():
        for op in doc.get("paths", {}).get(route, {}).values():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            op["security"] = ([{}] + KEYED) if route == "/predict" and open_predict else KEYED
            # BentoML keys some statuses by int: as JSON they would repeat ours, and Swagger UI then renders nothing
            responses = {str(code): r for code, r in op["responses"].items()}
            for code in ("400", "404", "500"):
                responses.pop(code, None)   # BentoML's generic ones; ours say what this server answers
            op["responses"] = responses | {c: ERRORS[c] for c in codes}
    return doc


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<link rel="stylesheet" href="/static_content/swagger-ui.css">
<link rel="icon" type="image/png" href="/static_content/favicon-light-32x32.png" sizes="32x32">
</head><body><div id="swagger-ui"></div>
<script src="/static_content/swagger-ui-bundle.js" charset="utf-8"></script>
<script src="/static_content/swagger-ui-standalone-preset.js" charset="utf-8"></script>
<script>
window.onload = function () {{
  window.ui = SwaggerUIBundle({{url: "/docs.json", dom_id: "#swagger-ui", deepLinking: true,
    persistAuthorization: true, tryItOutEnabled: true, validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: "BaseLayout"}});
}};
</script></body></html>
"""


class DocsPages:
    """ASGI middleware: `/` and `/docs` (the Swagger UI page) and `/docs.json` (the document) are yanjin's;
    everything else goes on to BentoML. `generated` returns BentoML's document (built once, on first use)."""

    def __init__(self, app, generated: Callable[[], dict], model: str, open_predict: bool, max_chars: int,
                 review_threshold: float) -> None:
        self.app = app
        self.model = model

        @lru_cache(maxsize=1)
        def document() -> bytes:
            return json.dumps(openapi(generated(), model, open_predict, max_chars, review_threshold)).encode()
        self.document = document

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD") or scope["path"] not in DOCS_PATHS:
            return await self.app(scope, receive, send)
        if scope["path"] == "/docs.json":
            body, kind = self.document(), b"application/json"
        else:
            body, kind = PAGE.format(title=f"yanjin serving: {self.model}").encode(), b"text/html; charset=utf-8"
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body if scope["method"] == "GET" else b""})
