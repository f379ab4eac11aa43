"""Who may open which page: staff pages answer an annotator with the app's own 403 page, not the admin login."""

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse


def staff_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Log in first (the app's login page); a signed-in non-staff user gets 403 (templates/403.html).

    Django's staff_member_required sends everyone who is not staff to the admin's
    login, which tells a signed-in annotator only "not authorized" there.
    """

    @login_required
    @wraps(view)
    def guarded(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not request.user.is_staff:
            raise PermissionDenied("This page is for staff (campaign leads and admins).")
        return view(request, *args, **kwargs)

    return guarded
