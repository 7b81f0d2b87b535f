"""Login rate limiting, per account and per source address, in bounded memory.

Two limits, both sliding windows over the injected clock: an account that
failed ``account_failures`` logins within ``window_s`` is refused until the
oldest of them leaves the window (online guessing against one account, from
anywhere: OWASP Authentication Cheat Sheet, NIST SP 800-63B section 5.2.2),
and a source address that made ``address_attempts`` attempts (failed or not)
within ``window_s`` is refused likewise (one address trying many accounts).
A refusal costs no password hash. The one thing to know: the state lives in
this process and is capped at ``max_keys`` accounts and addresses each (the
oldest are forgotten first), so a flood of made-up names or spoofed
addresses cannot grow it without bound; several API processes each keep
their own, so the effective limit is per process (docs/server.md).
"""

from collections import OrderedDict, deque

__all__ = ("LoginLimiter",)


class _Windows:
    """Per key, the times of recent events within ``window_s``; at most ``max_keys`` keys (LRU)."""

    def __init__(self, limit: int, window_s: float, max_keys: int):
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self._events: OrderedDict[str, deque[float]] = OrderedDict()

    def _trim(self, key: str, now: float) -> deque[float] | None:
        q = self._events.get(key)
        if q is None:
            return None
        while q and q[0] <= now - self.window_s:
            q.popleft()
        if not q:
            del self._events[key]
            return None
        return q

    def retry_after(self, key: str, now: float) -> float:
        """Seconds until ``key`` may try again; 0 when it may now."""
        q = self._trim(key, now)
        if q is None or len(q) < self.limit:
            return 0.0
        return max(0.0, q[-self.limit] + self.window_s - now)

    def add(self, key: str, now: float) -> None:
        q = self._trim(key, now)
        if q is None:
            q = self._events[key] = deque(maxlen=self.limit)
        q.append(now)
        self._events.move_to_end(key)
        while len(self._events) > self.max_keys:
            self._events.popitem(last=False)

    def clear(self, key: str) -> None:
        self._events.pop(key, None)

    def __len__(self) -> int:
        return len(self._events)


class LoginLimiter:
    """``retry_after(account, address, now)`` before checking a password; ``failed``/``succeeded`` after."""

    def __init__(
        self,
        account_failures: int = 5,
        address_attempts: int = 20,
        window_s: float = 300.0,
        max_keys: int = 10000,
    ):
        self.accounts = _Windows(account_failures, window_s, max_keys)
        self.addresses = _Windows(address_attempts, window_s, max_keys)

    def retry_after(self, account: str, address: str, now: float) -> float:
        """Seconds until this account from this address may try a password again; 0: it may now."""
        return max(self.accounts.retry_after(account.lower(), now), self.addresses.retry_after(address, now))

    def attempted(self, address: str, now: float) -> None:
        """Count an attempt from ``address`` (call before the password check, whatever it gives)."""
        self.addresses.add(address, now)

    def failed(self, account: str, now: float) -> None:
        """Count a failed password for ``account``."""
        self.accounts.add(account.lower(), now)

    def succeeded(self, account: str) -> None:
        """A correct password ends the account's failure count."""
        self.accounts.clear(account.lower())
