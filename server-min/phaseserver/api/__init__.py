"""The server's HTTP API (Starlette): routes, the dispatcher that guards them, and the OpenAPI 3.1 document.

- ``app``: ``create_app(server)``, the services behind the routes, middleware and lifespan; ``ROUTERS``.
- ``routing``: ``Endpoint``/``endpoint`` (how a route declares its permission and inputs) and ``dispatch``.
- ``schema``: the JSON Schema subset the routes declare and the validator; ``schemas``: shared schemas.
- ``openapi``: the document, generated from the declarations.
- ``routes_*``: operations, auth, fleet, commands, audit, admin (the alarms area adds its own).

The one thing to know: no handler runs before the dispatcher has authenticated the caller,
checked the route's permission (and the CSRF token of a cookie request) and validated its inputs.
"""
