"""Password hashing with Argon2id (RFC 9106) through argon2-cffi, and the check that costs the same for unknown users.

The one thing to know: a hash is ``$argon2id$v=19$m=...,t=...,p=...$salt$hash``
(the PHC string), so its parameters travel with it; raising the cost later
re-hashes a password at its next successful login (``Hasher.verify`` says
so). Verifying takes tens of milliseconds and ``memory_kib`` of RAM by
design, so the API runs it in a worker thread and at most ``concurrency``
hashes run at once (a semaphore inside): a flood of logins queues instead of
exhausting memory,
and the login rate limit (``ratelimit``) refuses most of them before any hash.

Defaults: RFC 9106 section 4's second recommended option (t = 3 passes, 64 MiB,
4 lanes), the one for machines without 2 GiB to spare per login.
"""

import hmac
import threading

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from phaseserver.errors import AuthError

__all__ = ("Hasher", "MIN_LENGTH", "MAX_LENGTH", "check_password_policy", "constant_time_equal")

# NIST SP 800-63B section 5.1.1.2: at least 8 characters chosen by the user, allow at least 64.
MIN_LENGTH = 8
MAX_LENGTH = 256


def check_password_policy(password: str) -> str:
    """``password`` if its length is within MIN_LENGTH..MAX_LENGTH characters, else AuthError."""
    if not isinstance(password, str) or not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise AuthError("a password has %d to %d characters" % (MIN_LENGTH, MAX_LENGTH))
    return password


class Hasher:
    """Argon2id with fixed parameters; ``hash``/``verify`` block (call them in a worker thread from async code)."""

    def __init__(self, time_cost: int = 3, memory_kib: int = 65536, parallelism: int = 4, concurrency: int = 2):
        self._ph = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, hash_len=32, salt_len=16, type=Type.ID
        )
        self._limit = threading.BoundedSemaphore(concurrency)
        # Verified against when the account does not exist, so an unknown name costs as much as a wrong password.
        self._dummy = self._ph.hash("phasekit: no such account")

    def hash(self, password: str) -> str:
        """The PHC string of a new password (checked against the length policy first)."""
        check_password_policy(password)
        with self._limit:
            return self._ph.hash(password)

    def verify(self, stored: str | None, password: str) -> tuple[bool, bool]:
        """``(matches, needs_rehash)``; ``stored`` None (no such account) costs the same and never matches."""
        if not isinstance(password, str) or len(password) > MAX_LENGTH:
            return False, False
        target = stored if stored is not None else self._dummy
        try:
            with self._limit:
                self._ph.verify(target, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False, False
        if stored is None:
            return False, False
        return True, self._ph.check_needs_rehash(stored)

    def __repr__(self) -> str:
        p = self._ph
        return "Hasher(argon2id, t=%d, m=%d KiB, p=%d)" % (p.time_cost, p.memory_cost, p.parallelism)


def constant_time_equal(a: bytes, b: bytes) -> bool:
    """Compare secrets without an early exit (``hmac.compare_digest``)."""
    return hmac.compare_digest(a, b)
