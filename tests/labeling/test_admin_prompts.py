import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from labeling.models import Prompt, Split

pytestmark = pytest.mark.django_db


def _upload(client, campaign, name: str, content: str | bytes):
    data = content if isinstance(content, bytes) else content.encode()
    return client.post(
        reverse("admin:labeling_prompt_upload"),
        {"campaign": campaign.pk, "file": SimpleUploadedFile(name, data), "format": ""},
        follow=True,
    )


def test_admin_upload_imports_and_reports_counts(client, admin_user, campaign):
    client.force_login(admin_user)
    response = _upload(client, campaign, "p.jsonl", '{"prompt": "one"}\n{"prompt": "two"}\n{"prompt": "one"}\n')
    assert "From p.jsonl into helpfulness: imported 2 prompts, skipped 1 duplicates" in response.content.decode()
    assert Prompt.objects.filter(campaign=campaign).count() == 2
    # The admin lands on the prompts just imported, not on the unfiltered list.
    path, query = response.redirect_chain[-1][0].split("?")
    assert path == reverse("admin:labeling_prompt_changelist")
    assert sorted(query.split("&")) == [f"campaign__id__exact={campaign.pk}", "source=p.jsonl"]
    assert response.content.decode().count('class="action-select"') == 2


def test_admin_upload_of_a_bad_file_shows_the_line_and_stores_nothing(client, admin_user, campaign):
    client.force_login(admin_user)
    response = _upload(client, campaign, "p.jsonl", '{"prompt": "one"}\n{"prompt": "two"\n')
    assert response.status_code == 200
    assert "Nothing was imported. p.jsonl line 2: invalid JSON" in response.content.decode()
    assert Prompt.objects.count() == 0


def test_admin_upload_names_a_nul_or_a_byte_that_is_not_utf8_and_stores_nothing(client, admin_user, campaign):
    client.force_login(admin_user)
    response = _upload(client, campaign, "p.csv", b"prompt,tags\nfine,t\nbad\x00,t\n")
    assert "Nothing was imported. p.csv line 3: field &#x27;prompt&#x27; contains a NUL" in response.content.decode()
    response = _upload(client, campaign, "latin1.csv", "prompt\nfine\ncaf\u00e9\n".encode("latin-1"))
    assert "latin1.csv line 3: field &#x27;prompt&#x27; contains U+DCE9" in response.content.decode()
    assert Prompt.objects.count() == 0


def test_admin_upload_accepts_a_utf8_byte_order_mark(client, admin_user, campaign):
    client.force_login(admin_user)
    response = _upload(client, campaign, "excel.csv", b"\xef\xbb\xbfprompt\nWhat is a tide?\n")
    assert "imported 1 prompts" in response.content.decode()
    assert Prompt.objects.get().text == "What is a tide?"


def test_annotator_cannot_reach_the_upload(client, alice, campaign):
    client.force_login(alice)
    response = client.get(reverse("admin:labeling_prompt_upload"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_prompt_changelist_filters_by_tag_split_and_enabled_and_searches(client, admin_user, campaign):
    client.force_login(admin_user)
    _upload(client, campaign, "p.jsonl", '{"prompt": "alpha kite", "tags": ["x"]}\n{"prompt": "beta", "split": "heldout"}\n')
    url = reverse("admin:labeling_prompt_changelist")
    tag_id = Prompt.objects.get(text="alpha kite").tags.get().pk
    assert "alpha kite" in client.get(url, {"tag": tag_id}).content.decode()
    assert "beta" not in client.get(url, {"tag": tag_id}).content.decode()
    assert "beta" in client.get(url, {"split__exact": "heldout"}).content.decode()
    assert "alpha kite" in client.get(url, {"q": "kite"}).content.decode()
    assert client.get(url, {"enabled__exact": "1"}).status_code == 200


def test_bulk_disable_and_enable_actions(client, admin_user, campaign):
    client.force_login(admin_user)
    _upload(client, campaign, "p.jsonl", '{"prompt": "a"}\n{"prompt": "b"}\n')
    ids = [str(pk) for pk in Prompt.objects.values_list("pk", flat=True)]
    url = reverse("admin:labeling_prompt_changelist")
    client.post(url, {"action": "disable", "_selected_action": ids})
    assert not Prompt.objects.filter(enabled=True).exists()
    client.post(url, {"action": "enable", "_selected_action": ids[:1]})
    assert Prompt.objects.filter(enabled=True).count() == 1


def test_heldout_split_action_asks_for_fraction_and_seed_then_applies(client, admin_user, campaign):
    client.force_login(admin_user)
    rows = "".join(json.dumps({"prompt": f"p{i}"}) + "\n" for i in range(200))
    _upload(client, campaign, "p.jsonl", rows)
    url = reverse("admin:labeling_prompt_changelist")
    ids = [str(pk) for pk in Prompt.objects.values_list("pk", flat=True)]
    form = client.post(url, {"action": "assign_heldout", "_selected_action": ids})
    assert b"Apply split" in form.content and not Prompt.objects.filter(split=Split.HELDOUT).exists()
    done = client.post(
        url, {"action": "assign_heldout", "_selected_action": ids, "apply": "1", "fraction": "0.5", "seed": "1"}, follow=True
    )
    held = Prompt.objects.filter(split=Split.HELDOUT).count()
    assert 70 < held < 130
    assert f"{held} of 200 prompts are now held out" in done.content.decode()


def test_campaign_admin_exposes_the_judgment_settings(client, admin_user, campaign):
    client.force_login(admin_user)
    page = client.get(reverse("admin:labeling_campaign_change", args=[campaign.pk])).content.decode()
    for field in ["guidelines", "annotations_per_pair", "allow_tie", "allow_both_bad", "strength_scale",
                  "rationale_required", "gold_rate", "lease_seconds"]:
        assert f'name="{field}"' in page


def test_editing_a_prompts_priority_in_the_admin_reorders_its_pairs(client, admin_user, campaign):
    from tests.labeling.factories import make_pairs

    pair = make_pairs(campaign, 1)[0]
    client.force_login(admin_user)
    prompt = pair.prompt
    url = reverse("admin:labeling_prompt_change", args=[prompt.pk])
    response = client.post(
        url,
        {"campaign": campaign.pk, "text": prompt.text, "content_hash": prompt.content_hash, "enabled": "on",
         "priority": "9", "split": "train", "source": "", "external_id": ""},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    pair.refresh_from_db()
    assert pair.priority == 9
