"""What every API endpoint shares: the error answers its schema lists, and the answer for unknown
/api/ paths. (The JSON parser is config.parsers: DRF's APIView imports it while this module imports DRF.)"""

from django.http import HttpRequest, JsonResponse
from drf_spectacular import openapi
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers
from rest_framework.permissions import AllowAny


def not_found(request: HttpRequest, path: str = "") -> JsonResponse:
    """Unknown /api/ paths answer like the API's own 404s (JSON), not with Django's HTML page."""
    return JsonResponse({"detail": "Not found."}, status=404)


class DetailSerializer(serializers.Serializer):
    """DRF's error body (authentication, permission, not found, parse errors); some add a `code`."""

    detail = serializers.CharField()


_BAD_REQUEST = OpenApiResponse(
    OpenApiTypes.OBJECT,
    description="The request was refused, nothing stored: `{\"detail\": ...}` for a body that cannot be parsed "
    "(not a JSON object, a NUL, a lone surrogate, a number out of range), `{\"<field>\": [messages]}` for invalid "
    "fields, or `{\"code\": ..., \"detail\": ...}` for a refusal with a stable code.",
)
_UNAUTHENTICATED = OpenApiResponse(
    DetailSerializer, description="No valid credentials: a missing, wrong or expired token, or an inactive user."
)
_FORBIDDEN = OpenApiResponse(
    DetailSerializer,
    description="Not allowed: a staff-only endpoint, a session request without its CSRF token, or (with session "
    "authentication first) missing credentials.",
)
_NOT_FOUND = OpenApiResponse(DetailSerializer, description="Nothing with this id (that you may see).")


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's schema, listing on every operation the error answers DRF gives it: 400 where a body
    is read, 401/403 where a login is needed, 404 where the path names an object. A view's own
    extend_schema(responses=...) still wins for a status code it declares."""

    def _get_response_bodies(self, direction="response") -> dict:
        responses = super()._get_response_bodies(direction)
        errors = {}
        if self.method in ("POST", "PUT", "PATCH") and self.get_request_serializer() is not None:
            errors["400"] = _BAD_REQUEST
        if any(not isinstance(permission, AllowAny) for permission in self.view.get_permissions()):
            errors["401"], errors["403"] = _UNAUTHENTICATED, _FORBIDDEN
        if "{" in self.path:
            errors["404"] = _NOT_FOUND
        for code, response in errors.items():
            if code not in responses:
                responses[code] = self._get_response_for_code(response, code, direction=direction)
        return responses
