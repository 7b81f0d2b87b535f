"""phaseserver.auth on its own: Argon2id hashes, access tokens (RFC 8725), refresh rotation, sessions, keys, limits.

Each credential check is exercised with the forgeries it must refuse; the
database parts run on a real SQLite store with the server's migrations.
"""

import time

import jwt
import pytest
from argon2 import PasswordHasher
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from phaseserver.auth import accounts, apikeys, keyfile, refresh, roles, sessions
from phaseserver.auth.passwords import Hasher, check_password_policy
from phaseserver.auth.ratelimit import LoginLimiter
from phaseserver.auth.tokens import TokenIssuer
from phaseserver.errors import AuthError
from phaseserver.store.db import Database
from phaseserver.store.migrate import migrate

NOW = 1_800_000_000.0
KEY = Ed25519PrivateKey.generate()


@pytest.fixture()
def db(tmp_path):
    d = Database.sqlite(str(tmp_path / "auth.db"))
    migrate(d)
    d.execute("INSERT INTO tenant (id, name, created_s) VALUES ('t1', 'one', 0), ('t2', 'two', 0)")
    yield d
    d.close()


FAST = Hasher(time_cost=1, memory_kib=8192, parallelism=1)


# ---- passwords ------------------------------------------------------------------------------


def test_password_hashes_are_argon2id_phc_strings_salted_and_checked():
    h = FAST.hash("a good password")
    assert h.startswith("$argon2id$v=19$m=8192,t=1,p=1$")
    assert FAST.hash("a good password") != h  # salted
    assert FAST.verify(h, "a good password") == (True, False)
    assert FAST.verify(h, "a good passworD") == (False, False)
    assert FAST.verify(None, "anything at all") == (False, False)  # no account: same work, never a match
    assert FAST.verify("not a hash", "anything at all") == (False, False)
    # Raising the cost later re-hashes at the next login.
    assert Hasher(time_cost=2, memory_kib=8192, parallelism=1).verify(h, "a good password") == (True, True)
    # The default parameters are RFC 9106's second recommendation.
    assert "t=3, m=65536 KiB, p=4" in repr(Hasher())
    ph = PasswordHasher()
    assert ph.verify(h, "a good password")  # an independent check of the encoding


def test_password_policy_bounds_length():
    for bad in ("", "short", "x" * 257, None):
        with pytest.raises(AuthError):
            check_password_policy(bad)
    assert check_password_policy("eight ch") == "eight ch"
    assert FAST.verify(FAST.hash("eight ch"), "x" * 10_000) == (False, False)  # no hashing of huge inputs


# ---- access tokens ----------------------------------------------------------------------------


def _issuer(key=KEY, iss="phaseserver", aud="phasekit-api"):
    return TokenIssuer(key, iss, aud, ttl_s=300)


def _claims(**over):
    c = {"iss": "phaseserver", "aud": "phasekit-api", "sub": "7", "iat": int(NOW), "exp": int(NOW) + 300,
         "jti": "x", "role": "viewer", "tid": "t1"}  # fmt: skip
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def test_a_minted_token_verifies_and_carries_typ_kid_and_claims():
    issuer = _issuer()
    tok = issuer.mint(7, "t1", "viewer", NOW)
    header = jwt.get_unverified_header(tok)
    assert header == {"alg": "EdDSA", "typ": "at+jwt", "kid": keyfile.key_id(KEY)}
    claims = issuer.verify(tok, NOW + 10)
    assert (claims["sub"], claims["tid"], claims["role"], claims["exp"] - claims["iat"]) == ("7", "t1", "viewer", 300)
    assert "tid" not in issuer.verify(issuer.mint(1, None, "sysadmin", NOW), NOW)


@pytest.mark.parametrize(
    "name,token,why",
    [
        ("expired", lambda: _issuer().mint(7, "t1", "viewer", NOW - 400), "expired"),
        ("future", lambda: _issuer().mint(7, "t1", "viewer", NOW + 400), "future"),
        ("other key", lambda: _issuer(Ed25519PrivateKey.generate()).mint(7, "t1", "viewer", NOW), "kid"),
        (
            "other key, same kid",
            lambda: jwt.encode(
                _claims(), Ed25519PrivateKey.generate(), "EdDSA", headers={"typ": "at+jwt", "kid": keyfile.key_id(KEY)}
            ),
            "Signature",
        ),
        ("audience", lambda: _issuer(aud="another-api").mint(7, "t1", "viewer", NOW), "(?i)audience"),
        ("issuer", lambda: _issuer(iss="someone-else").mint(7, "t1", "viewer", NOW), "(?i)issuer"),
        ("typ JWT", lambda: jwt.encode(_claims(), KEY, "EdDSA", headers={"typ": "JWT"}), "typ"),
        ("no typ", lambda: jwt.encode(_claims(), KEY, "EdDSA", headers={"typ": None}), "typ"),
        ("alg none", lambda: jwt.encode(_claims(), None, "none", headers={"typ": "at+jwt"}), "alg"),
        (
            "HS256 with the public key (algorithm confusion)",
            lambda: _hs256_with_public_key(),
            "alg",
        ),
        ("crit", lambda: jwt.encode(_claims(), KEY, "EdDSA", headers={"typ": "at+jwt", "crit": ["exp"]}), "crit"),
        ("no exp", lambda: jwt.encode(_claims(exp=None), KEY, "EdDSA", headers={"typ": "at+jwt"}), "exp"),
        ("no iat", lambda: jwt.encode(_claims(iat=None), KEY, "EdDSA", headers={"typ": "at+jwt"}), "iat"),
        ("no aud", lambda: jwt.encode(_claims(aud=None), KEY, "EdDSA", headers={"typ": "at+jwt"}), "aud"),
        (
            "aud list",
            lambda: jwt.encode(_claims(aud=["phasekit-api", "x"]), KEY, "EdDSA", headers={"typ": "at+jwt"}),
            "strict",
        ),  # fmt: skip
        (
            "too long",
            lambda: jwt.encode(_claims(exp=int(NOW) + 86400), KEY, "EdDSA", headers={"typ": "at+jwt"}),
            "lifetime",
        ),  # fmt: skip
        (
            "float exp",
            lambda: jwt.encode(_claims(exp=NOW + 100.5), KEY, "EdDSA", headers={"typ": "at+jwt"}),
            "integers",
        ),  # fmt: skip
        ("tid not text", lambda: jwt.encode(_claims(tid=5), KEY, "EdDSA", headers={"typ": "at+jwt"}), "tid"),
        ("garbage", lambda: "not.a.token", "header"),
        ("empty", lambda: "", "missing"),
        ("huge", lambda: "a" * 5000, "missing"),
    ],
)
def test_verify_refuses(name, token, why):
    with pytest.raises(AuthError, match=why):
        _issuer().verify(token(), NOW)


def _hs256_with_public_key():
    from cryptography.hazmat.primitives import serialization

    pem = KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    import base64
    import hashlib
    import hmac
    import json

    def b64(b):
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "at+jwt"}).encode())
    body = b64(json.dumps(_claims()).encode())
    sig = b64(hmac.new(pem, ("%s.%s" % (head, body)).encode(), hashlib.sha256).digest())
    return "%s.%s.%s" % (head, body, sig)


# ---- rate limits ------------------------------------------------------------------------------


def test_login_limiter_counts_failures_per_account_and_attempts_per_address_and_stays_bounded():
    lim = LoginLimiter(account_failures=3, address_attempts=5, window_s=60, max_keys=100)
    for i in range(3):
        assert lim.retry_after("Alice", "10.0.0.%d" % i, NOW + i) == 0
        lim.attempted("10.0.0.%d" % i, NOW + i)
        lim.failed("alice", NOW + i)
    wait = lim.retry_after("ALICE", "10.0.0.9", NOW + 3)  # account names compare case-insensitively
    assert 56 <= wait <= 57
    assert lim.retry_after("alice", "10.0.0.9", NOW + 60.5) == 0  # the oldest failure left the window
    lim.succeeded("alice")
    for i in range(5):
        lim.attempted("10.9.9.9", NOW + 100 + i)
    assert lim.retry_after("bob", "10.9.9.9", NOW + 105) > 0
    assert lim.retry_after("bob", "10.9.9.8", NOW + 105) == 0
    for i in range(1000):
        lim.failed("made-up-%d" % i, NOW + 200)
    assert len(lim.accounts) <= 100


# ---- roles ------------------------------------------------------------------------------------


def test_the_permission_table_separates_duties():
    allowed = roles.allowed
    assert not allowed("viewer", "alarm.ack") and not allowed("viewer", "command.send")
    assert not allowed("viewer", "audit.read")
    assert allowed("operator", "alarm.ack") and allowed("operator", "command.send")
    assert not allowed("operator", "user.manage") and not allowed("operator", "audit.read")
    assert not allowed("secadmin", "command.send") and not allowed("secadmin", "fleet.read")
    assert [p for p in roles.PERMISSIONS if allowed("auditor", p)] == ["audit.read", "self"]
    assert not allowed("sysadmin", "fleet.read") and not allowed("sysadmin", "command.send")
    assert [p for p in roles.PERMISSIONS if allowed("monitor", p)] == ["metrics.read", "self"]
    assert not allowed("root", "self") and not allowed("viewer", "no.such.permission")
    with pytest.raises(AuthError):
        roles.check_role("sysadmin", "t1")
    with pytest.raises(AuthError):
        roles.check_role("viewer", None)
    with pytest.raises(AuthError):
        roles.check_role("viewer", roles.UNASSIGNED)


# ---- accounts, sessions, refresh tokens, API keys (SQLite) ------------------------------------


def test_sessions_are_stored_hashed_expire_idle_and_end_on_revocation(db):
    acc = accounts.add(db, FAST, "alice", "t1", "operator", "password 1", NOW)
    token, csrf = sessions.create(db, acc.id, "10.0.0.1", NOW, ttl_s=3600)
    stored = db.fetchall("SELECT token_hash, csrf_hash FROM auth_session")
    assert token not in str(stored) and csrf not in str(stored)
    row = sessions.lookup(db, token, NOW + 10, idle_s=600)
    assert row is not None and sessions.check_csrf(row.csrf_hash, csrf)
    assert not sessions.check_csrf(row.csrf_hash, csrf[:-1] + "x") and not sessions.check_csrf(row.csrf_hash, None)
    assert sessions.lookup(db, token, NOW + 601, idle_s=600) is None  # idle
    sessions.touch(db, row.token_hash, NOW + 590)
    assert sessions.lookup(db, token, NOW + 1100, idle_s=600) is not None
    assert sessions.lookup(db, token, NOW + 3600, idle_s=10**6) is None  # absolute lifetime
    assert sessions.lookup(db, token + "x", NOW, idle_s=600) is None
    accounts.revoke(db, acc, NOW + 20)
    assert sessions.lookup(db, token, NOW + 21, idle_s=600) is None


def test_refresh_tokens_rotate_and_a_reused_one_revokes_its_family(db):
    acc = accounts.add(db, FAST, "bob", "t1", "viewer", "password 2", NOW)
    first = refresh.issue(db, acc.id, NOW, ttl_s=3600)
    account_id, second = refresh.rotate(db, first, NOW + 1, 3600)
    assert account_id == acc.id and second != first
    account_id, why = refresh.rotate(db, first, NOW + 2, 3600)  # stolen copy used again
    assert account_id is None and "family" in why
    assert refresh.rotate(db, second, NOW + 3, 3600)[0] is None  # the family is gone
    third = refresh.issue(db, acc.id, NOW, ttl_s=10)
    assert refresh.rotate(db, third, NOW + 11, 3600) == (None, "refresh token expired")
    fourth = refresh.issue(db, acc.id, NOW, ttl_s=3600)
    assert refresh.revoke(db, fourth, NOW) and refresh.rotate(db, fourth, NOW, 3600)[0] is None
    assert refresh.rotate(db, "rt_nonsense", NOW, 3600) == (None, "unknown refresh token")


def test_api_keys_are_stored_hashed_and_refused_when_revoked_expired_or_altered(db):
    text, key = apikeys.create(db, "t1", "viewer", "grafana", "cli:test", NOW, ttl_s=100)
    assert text.startswith("pk_%s_" % key.id) and text.split("_", 2)[2] not in str(db.fetchall("SELECT * FROM api_key"))
    assert apikeys.lookup(db, text, NOW + 1).role == "viewer"
    assert apikeys.lookup(db, text[:-1] + ("A" if text[-1] != "A" else "B"), NOW) is None
    assert apikeys.lookup(db, text, NOW + 100) is None  # expired
    text2, key2 = apikeys.create(db, "t2", "operator", "script", "cli:test", NOW)
    apikeys.revoke(db, key2.id, NOW + 1)
    assert apikeys.lookup(db, text2, NOW + 2) is None
    with pytest.raises(AuthError):
        apikeys.create(db, "t1", "sysadmin", "x", "cli:test", NOW)
    with pytest.raises(AuthError):
        apikeys.create(db, None, "viewer", "x", "cli:test", NOW)
    assert apikeys.create(db, None, "monitor", "prometheus", "cli:test", NOW)[1].tenant_id is None


def test_account_names_and_tenants_are_checked(db):
    for bad in ("", "-x", "a b", "x" * 65, "é"):
        with pytest.raises(AuthError):
            accounts.add(db, FAST, bad, "t1", "viewer", "password 3", NOW)
    with pytest.raises(AuthError, match="does not exist"):
        accounts.add(db, FAST, "carol", "t9", "viewer", "password 3", NOW)
    accounts.add(db, FAST, "carol", "t1", "viewer", "password 3", NOW)
    with pytest.raises(AuthError, match="exists"):
        accounts.add(db, FAST, "carol", "t2", "viewer", "password 3", NOW)


def test_key_files_are_made_private_and_loose_ones_refused(tmp_path):
    p = tmp_path / "token.key"
    k1 = keyfile.load_or_create(str(p), "access-token")
    assert p.stat().st_mode & 0o777 == 0o600
    assert keyfile.key_id(keyfile.load_or_create(str(p), "access-token")) == keyfile.key_id(k1)
    p.chmod(0o644)
    with pytest.raises(AuthError, match="readable by others"):
        keyfile.load_or_create(str(p), "access-token")
    q = tmp_path / "bad.key"
    q.write_text("not a key")
    q.chmod(0o600)
    with pytest.raises(AuthError, match="bad.key"):
        keyfile.load_or_create(str(q), "audit")
    assert time.time() > 0
