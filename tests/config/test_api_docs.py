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


@pytest.mark.django_db
def test_the_schema_and_docs_need_a_login_any_user_will_do(client, alice):
    for url in ("/api/schema/", "/api/docs/"):
        assert client.get(url).status_code in (401, 403)
    client.force_login(alice)  # annotators script the labeling endpoints from it
    assert client.get("/api/schema/").status_code == 200 and client.get("/api/docs/").status_code == 200


@pytest.mark.django_db
def test_the_schema_lists_the_error_answers_with_their_bodies(client, alice):
    client.force_login(alice)
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    paths = schema["paths"]
    submit = paths["/api/labeling/assignments/{id}/submit/"]["post"]["responses"]
    assert {"200", "201", "400", "401", "403", "404", "409"} <= set(submit)
    conflict = schema["components"]["schemas"][submit["409"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1]]
    # Only lease_expired carries the next pair: `next` may be absent, or null when nothing is left.
    assert set(conflict["required"]) == {"code", "detail"} and conflict["properties"]["next"]["nullable"]
    assert set(paths["/api/training/rounds/"]["post"]["responses"]) >= {"201", "400", "401", "403", "409"}
    assert "404" not in paths["/api/labeling/campaigns/"]["get"]["responses"]  # no id in the path
    token = paths["/api/auth/token/"]["post"]
    assert set(token["responses"]) == {"200", "400", "429"} and not token.get("security")
    job = schema["components"]["schemas"]["JobOutput"]["properties"]
    assert job["policy_b"]["nullable"] and job["started_at"]["nullable"]
