import pytest


@pytest.mark.django_db
def test_openapi_schema_and_offline_docs(client, admin_user):
    client.force_login(admin_user)
    schema = client.get("/api/schema/")
    assert schema.status_code == 200 and b"/api/labeling/campaigns/{id}/next/" in schema.content
    docs = client.get("/api/docs/").content.decode()
    # Swagger UI's files come from this server (drf-spectacular-sidecar), not a CDN the machine can't reach.
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in docs
    assert "cdn.jsdelivr" not in docs
