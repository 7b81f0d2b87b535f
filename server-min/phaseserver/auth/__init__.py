"""Who may do what: accounts, roles, passwords, browser sessions, access and refresh tokens, API keys, login limits.

- ``roles``: the role set (IEC 62351-8 separation of duties) and the one permission table.
- ``passwords``: Argon2id (RFC 9106); ``ratelimit``: login attempts per account and address.
- ``accounts``: people's accounts; ``sessions``: browser sessions (cookie + CSRF token);
  ``tokens``: EdDSA access tokens (RFC 9068, RFC 8725); ``refresh``: rotating refresh tokens;
  ``apikeys``: per-tenant API keys; ``keyfile``: the server's Ed25519 key files.
- ``service``: a request's credential to a ``principal.Principal``, and password logins.
- ``manage``: administration (accounts, keys, tenants, sites), audited, shared by the API and the CLI.

The one thing to know: a credential proves who asks; ``roles.allowed`` decides what it may do;
the tenant it carries filters every query in SQL. Secrets (tokens, key secrets) are stored as
SHA-256, passwords as Argon2id; nothing here logs one.
"""
