"""Login throttling: a fixed-window count of failed logins per client address and username.

Counts live in Django's cache. The default LocMemCache counts per process;
with several web workers set CACHE_URL (Redis) so they share one count.
"""

import hashlib

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest


def _key(request: HttpRequest, username: str) -> str:
    # Hashed: usernames are user input and cache keys must stay short and printable.
    ident = f"{request.META.get('REMOTE_ADDR', '')}|{username.strip().lower()}"
    return "login-failures:" + hashlib.sha256(ident.encode()).hexdigest()


def login_blocked(request: HttpRequest, username: str) -> bool:
    return cache.get(_key(request, username), 0) >= settings.LOGIN_FAILURE_LIMIT


def login_failed(request: HttpRequest, username: str) -> None:
    key = _key(request, username)
    # add() starts the window only if no count exists, so the window is fixed, not sliding.
    cache.add(key, 0, timeout=settings.LOGIN_FAILURE_WINDOW_S)
    try:
        cache.incr(key)
    except ValueError:  # expired between add() and incr()
        cache.set(key, 1, timeout=settings.LOGIN_FAILURE_WINDOW_S)


def login_succeeded(request: HttpRequest, username: str) -> None:
    cache.delete(_key(request, username))


RETRY_MESSAGE = "Too many failed logins. Wait a few minutes and try again."
