"""The login guard: django-axes, with each try counted before its password is checked.

Every way in (the login page, /admin/login/, POST /api/auth/token/) calls
django.contrib.auth.authenticate, and LoginGuardBackend is the only backend.
Failures are counted in the database (axes' AccessAttempt rows), per username as
Django normalizes it and client address, so every web process and worker shares
them.

Why not axes as it comes: its backend reads the failure count, lets the password
be checked, and records the failure afterwards (on the user_login_failed signal).
Parallel guesses all read the count before any of them records, so 30 at once
were all checked against a limit of 5. Here each try first adds itself to the
count, under a row lock, and reads the total before letting go of it: only the
first LIMIT tries of a (username, address) ever reach the password hasher, and
a correct password clears the count again.
"""

import math

from axes.backends import AxesBackend
from axes.exceptions import AxesBackendPermissionDenied
from axes.handlers.database import AxesDatabaseHandler
from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_client_username, get_cool_off, get_credentials, get_failure_limit
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import router, transaction
from django.db.models import F
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from ipware import get_client_ip


class LoginGuardHandler(AxesDatabaseHandler):
    def attempt_count(self, request: HttpRequest, credentials: dict) -> bool:
        """Count this try as a failure now, before its password is checked; False when it is over the limit."""
        self.clean_expired_user_attempts(request, credentials)
        with transaction.atomic(using=router.db_for_write(AccessAttempt)):
            # One row per (username, address), whatever the user agent, locked while we count: tries
            # of one pair queue here, so the k-th sees exactly k and only the first LIMIT pass.
            attempt, created = AccessAttempt.objects.select_for_update().get_or_create(
                username=get_client_username(request, credentials),
                ip_address=request.axes_ip_address,
                user_agent="",
                defaults={
                    "http_accept": request.axes_http_accept,
                    "path_info": request.axes_path_info,
                    "failures_since_start": 1,
                    "attempt_time": request.axes_attempt_time,
                },
            )
            if not created:
                AccessAttempt.objects.filter(pk=attempt.pk).update(
                    failures_since_start=F("failures_since_start") + 1,
                    attempt_time=request.axes_attempt_time,
                    http_accept=request.axes_http_accept,
                    path_info=request.axes_path_info,
                )
            allowed = self.get_failures(request, credentials) <= get_failure_limit(request, credentials)
        request.login_guard_counted = True
        return allowed

    def user_login_failed(self, sender, credentials: dict, request=None, **kwargs) -> None:
        if getattr(request, "login_guard_counted", False):
            return  # attempt_count counted it already
        super().user_login_failed(sender, credentials, request, **kwargs)


class LoginGuardBackend(AxesBackend):
    """Refuses a locked-out client, counts the try, then checks the password (ModelBackend)."""

    def authenticate(self, request: HttpRequest, username: str | None = None, password: str | None = None, **kwargs):
        # Axes' own check: no request, or a client already over the limit, is refused here.
        super().authenticate(request, username=username, password=password, **kwargs)
        credentials = get_credentials(username=username, password=password, **kwargs)
        handler = AxesProxyHandler.get_implementation()
        if not handler.attempt_count(request, credentials):
            request.axes_locked_out = True  # AxesMiddleware (pages) and TokenView (API) answer with the lockout
            raise AxesBackendPermissionDenied("Too many failed logins for this username from this address")
        user = ModelBackend.authenticate(self, request, username=username, password=password, **kwargs)
        if user is not None:
            handler.reset_user_attempts(request, credentials)
        return user


def username_key(request: HttpRequest, credentials: dict | None) -> str | None:
    """The username tries are counted under, as Django normalizes it (NFKC): 'ａｌｉｃｅ' counts as 'alice'."""
    username = (credentials or request.POST).get(settings.AXES_USERNAME_FORM_FIELD)
    if username is None:
        return None
    return AbstractBaseUser.normalize_username(str(username))[: AccessAttempt._meta.get_field("username").max_length]


def client_ip(request: HttpRequest) -> str | None:
    """The client's address: the socket's peer, or behind TRUSTED_PROXY_COUNT proxies the entry the
    outermost one wrote into TRUSTED_PROXY_HEADER (entries left of it are the client's to forge)."""
    remote = request.META.get("REMOTE_ADDR")
    if not settings.TRUSTED_PROXY_HEADER:
        return remote
    found, _ = get_client_ip(
        request,
        # ipware counts the proxies listed in the header; the last one (REMOTE_ADDR) writes, but is not listed.
        proxy_count=settings.TRUSTED_PROXY_COUNT - 1,
        request_header_order=["HTTP_" + settings.TRUSTED_PROXY_HEADER.upper().replace("-", "_")],
        strict=False,
    )
    # No usable header: the request did not come through the proxy, so its peer is the client.
    return found or remote


def lockout_message() -> str:
    minutes = math.ceil(get_cool_off().total_seconds() / 60)
    return (
        f"Too many failed logins for this username from your address. "
        f"Wait {minutes} minute{'s' if minutes != 1 else ''} and try again."
    )


def lockout_response(request: HttpRequest, original_response: HttpResponse, credentials: dict | None) -> HttpResponse:
    """What the login page and the admin's login answer a locked-out client (AXES_LOCKOUT_CALLABLE)."""
    return render(request, "registration/locked_out.html", {"message": lockout_message()}, status=429)
