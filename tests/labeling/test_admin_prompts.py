import html
import io
import json
import re

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from labeling import importers, services
from labeling.models import Campaign, Prompt, Split

pytestmark = pytest.mark.django_db


def _upload(client, campaign, name: str, content: str | bytes, **fields):
    data = content if isinstance(content, bytes) else content.encode()
    return client.post(
        reverse("admin:labeling_prompt_upload"),
        {"campaign": campaign.pk if campaign else "", "file": SimpleUploadedFile(name, data), "format": "", **fields},
        follow=True,
    )


def _problems(response) -> list[list[str]]:
    """The rows of the page's table of bad lines: file, line, field, problem."""
    table = response.content.decode().split('id="import-problems"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr>(.*?)</tr>", table, re.S)[1:]
    return [[html.unescape(cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)] for row in rows]


def test_admin_upload_imports_and_reports_counts(client, admin_user, campaign):
    client.force_login(admin_user)
    response = _upload(client, campaign, "p.jsonl", '{"prompt": "one"}\n{"prompt": "two"}\n{"prompt": "one"}\n')
    assert (
        "Imported 2 prompts from p.jsonl (JSONL (prompt text)) into helpfulness; skipped 1 duplicates."
        in response.content.decode()
    )
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
    assert "Nothing was imported: p.jsonl has 1 bad line (listed above)." in response.content.decode()
    assert _problems(response)[0][:3] == ["p.jsonl", "2", "—"]
    assert _problems(response)[0][3].startswith("invalid JSON")
    assert Prompt.objects.count() == 0


def test_admin_upload_names_a_nul_or_a_byte_that_is_not_utf8_and_stores_nothing(client, admin_user, campaign):
    client.force_login(admin_user)
    response = _upload(client, campaign, "p.csv", b"prompt,tags\nfine,t\nbad\x00,t\n")
    assert _problems(response) == [["p.csv", "3", "prompt", "contains a NUL character (U+0000), which text columns cannot store"]]
    response = _upload(client, campaign, "latin1.csv", "prompt\nfine\ncaf\u00e9\n".encode("latin-1"))
    file, line, field, problem = _problems(response)[0]
    assert (file, line, field) == ("latin1.csv", "3", "prompt") and problem.startswith("contains U+DCE9")
    assert Prompt.objects.count() == 0


def test_admin_upload_lists_every_bad_line_up_to_the_cap_and_counts_the_rest(client, admin_user, campaign):
    client.force_login(admin_user)
    lines = [json.dumps({"prompt": f"good {i}"}) if i % 2 else json.dumps({"prompt": ""}) for i in range(1, 131)]
    lines[2] = '{"prompt": "x", "split": "test"}'
    response = _upload(client, campaign, "many.jsonl", "\n".join(lines) + "\n")
    problems = _problems(response)
    assert len(problems) == 50
    assert problems[0] == ["many.jsonl", "2", "prompt", "must be a non-empty string"]
    assert problems[1] == ["many.jsonl", "3", "split", "must be one of train, heldout, not 'test'"]
    assert [p[1] for p in problems[2:4]] == ["4", "6"]
    assert "and 16 more bad lines." in response.content.decode()  # 66 bad lines in all
    assert "Nothing was imported: many.jsonl has 66 bad lines (listed above)." in response.content.decode()
    assert Prompt.objects.count() == 0


def test_admin_upload_names_the_column_of_a_csv_field_over_the_size_limit(client, admin_user, campaign):
    client.force_login(admin_user)
    content = b'id,prompt,tags\n1,fine,t\n2,"' + b"x" * 200_000 + b'",t\n3,,t\n'
    response = _upload(client, campaign, "long.csv", content)
    [[file, line, field, problem]] = _problems(response)
    assert (file, line, field) == ("long.csv", "3", "prompt")
    assert problem.startswith("is longer than the CSV field limit (131,072 characters); for longer prompts use JSONL.")
    assert Prompt.objects.count() == 0


_HH = "\n\nHuman: Hi?\n\nAssistant: "
_HI = {"role": "user", "content": "Hi?"}


@pytest.mark.parametrize(
    "name, content, detected",
    [
        ("hh_sample.jsonl", json.dumps({"chosen": _HH + "Yo.", "rejected": _HH + "No."}), "HH-RLHF (JSONL)"),
        ("chat.jsonl", json.dumps({"messages": [_HI]}), "JSONL (chat messages)"),
        ("both.jsonl", '{"prompt": "a"}\n' + json.dumps({"messages": [_HI]}), "JSONL (prompt text and chat messages)"),
        ("sheet.csv", "prompt\nWhat is a tide?", "CSV"),
    ],
)
def test_admin_upload_message_names_the_file_as_uploaded_and_the_detected_format(
    client, admin_user, campaign, name, content, detected
):
    client.force_login(admin_user)
    page = html.unescape(_upload(client, campaign, name, content + "\n").content.decode())
    assert re.search(rf"Imported [12] prompts from {re.escape(name)} \({re.escape(detected)}\) into helpfulness", page)
    assert name.capitalize() not in page


def test_admin_upload_creates_a_new_campaign_with_the_settings_given(client, admin_user):
    client.force_login(admin_user)
    response = _upload(
        client, None, "p.jsonl", '{"prompt": "one"}\n', new_campaign="  kites  ", annotations_per_pair="3",
        strength_scale="none", allow_tie="on",
    )
    kites = Campaign.objects.get(name="kites")
    assert (kites.annotations_per_pair, kites.strength_scale, kites.allow_tie, kites.allow_both_bad) == (3, "none", True, False)
    assert kites.prompts.get().text == "one"
    assert "into the new campaign kites;" in response.content.decode()


def test_admin_upload_refusing_a_file_leaves_no_new_campaign_behind(client, admin_user):
    client.force_login(admin_user)
    response = _upload(client, None, "p.jsonl", '{"prompt": ""}\n', new_campaign="kites")
    assert "Nothing was imported" in response.content.decode()
    assert not Campaign.objects.filter(name="kites").exists()


@pytest.mark.parametrize(
    "pick, new_name, error",
    [
        (True, "kites", "Pick an existing campaign or name a new one, not both."),
        (False, "", "Pick a campaign, or name a new one below."),
        (False, "helpfulness", "A campaign named &#x27;helpfulness&#x27; exists: pick it above."),
    ],
)
def test_admin_upload_needs_exactly_one_campaign(client, admin_user, campaign, pick, new_name, error):
    client.force_login(admin_user)
    response = _upload(client, campaign if pick else None, "p.jsonl", '{"prompt": "one"}\n', new_campaign=new_name)
    assert error in response.content.decode()
    assert Prompt.objects.count() == 0 and Campaign.objects.count() == 1


def test_staff_without_campaign_permission_imports_only_into_existing_campaigns(client, campaign):
    clerk = User.objects.create_user("clerk", password="clerk-password-1", is_staff=True)
    clerk.user_permissions.add(Permission.objects.get(codename="add_prompt"), Permission.objects.get(codename="view_prompt"))
    client.force_login(clerk)
    form = client.get(reverse("admin:labeling_prompt_upload")).content.decode()
    assert 'name="new_campaign"' not in form
    response = _upload(client, None, "p.jsonl", '{"prompt": "one"}\n', new_campaign="kites")
    assert "This field is required." in response.content.decode()
    assert not Campaign.objects.filter(name="kites").exists()
    _upload(client, campaign, "p.jsonl", '{"prompt": "one"}\n')
    assert campaign.prompts.count() == 1


def test_admin_upload_accepts_a_utf8_byte_order_mark(client, admin_user, campaign):
    client.force_login(admin_user)
    response = _upload(client, campaign, "excel.csv", b"\xef\xbb\xbfprompt\nWhat is a tide?\n")
    assert "Imported 1 prompts from excel.csv (CSV)" in response.content.decode()
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


# --- Chat prompts edited as turns ----------------------------------------------------------------

_KITE = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is a kite?"},
    {"role": "assistant", "content": "A toy that flies."},
    {"role": "user", "content": "How do I fly one?"},
]


def _chat_prompt(campaign) -> Prompt:
    services.prompts_import(
        campaign=campaign, stream=io.StringIO(json.dumps({"messages": _KITE}) + "\n"), source="chat.jsonl"
    )
    return Prompt.objects.get(campaign=campaign)


def _save_turns(client, prompt: Prompt, turns, text: str = ""):
    return client.post(
        reverse("admin:labeling_prompt_change", args=[prompt.pk]),
        {"campaign": prompt.campaign_id, "text": text, "messages": json.dumps(turns) if turns is not None else "",
         "enabled": "on", "priority": "0", "split": "train", "source": prompt.source, "external_id": ""},
    )


def test_chat_prompt_change_form_offers_the_turns_editor_over_its_json(client, admin_user, campaign):
    prompt = _chat_prompt(campaign)
    client.force_login(admin_user)
    page = client.get(reverse("admin:labeling_prompt_change", args=[prompt.pk])).content.decode()
    assert "labeling/turns.js" in page and 'data-turns=""' in page
    assert 'data-roles="[&quot;system&quot;, &quot;user&quot;, &quot;assistant&quot;]"' in page
    assert "How do I fly one?" in page


def test_saving_edited_turns_stores_them_and_refreshes_the_content_hash(client, admin_user, campaign):
    prompt = _chat_prompt(campaign)
    client.force_login(admin_user)
    turns = [*_KITE[1:], {"role": "assistant", "content": "Into the wind."}, {"role": "user", "content": "And then?"}]
    response = _save_turns(client, prompt, turns)
    assert response.status_code == 302, response.content.decode()[:3000]
    prompt.refresh_from_db()
    assert prompt.messages == turns
    assert prompt.content_hash == importers.content_hash(text="", messages=turns)


@pytest.mark.parametrize(
    "turns, error",
    [
        ([*_KITE[:3]], "Turn 3 (the last): the role must be user: the last message is the user&#x27;s turn"),
        ([_KITE[0], {"role": "user", "content": "  "}, _KITE[3]], "Turn 2: the text must be a non-empty string."),
        ([{"role": "robot", "content": "beep"}, _KITE[3]], "Turn 1: the role must be one of system, user, assistant."),
        ([{"role": "user", "content": "x", "name": "ada"}], "Turn 1 (the last): must be an object with exactly"),
        ({"role": "user"}, "The turns must be a non-empty list of {role, content}."),
    ],
)
def test_turns_that_break_a_rule_are_refused_naming_the_turn(client, admin_user, campaign, turns, error):
    prompt = _chat_prompt(campaign)
    client.force_login(admin_user)
    response = _save_turns(client, prompt, turns)
    assert response.status_code == 200
    assert error in response.content.decode()
    prompt.refresh_from_db()
    assert prompt.messages == _KITE


def test_a_prompt_is_text_or_turns_and_unique_in_its_campaign(client, admin_user, campaign):
    prompt = _chat_prompt(campaign)
    services.prompts_import(campaign=campaign, stream=io.StringIO('{"prompt": "Hello there"}\n'), source="p.jsonl")
    client.force_login(admin_user)
    assert "plain text or chat turns, not both" in _save_turns(client, prompt, _KITE, text="Hi").content.decode()
    assert "Write the prompt&#x27;s text or add its chat turns." in _save_turns(client, prompt, None).content.decode()
    same = _save_turns(client, prompt, None, text="Hello   there ")
    assert "The campaign has a prompt with the same content already." in same.content.decode()
    assert _save_turns(client, prompt, None, text="A kite, please.").status_code == 302
    prompt.refresh_from_db()
    assert (prompt.text, prompt.messages) == ("A kite, please.", None)


def test_prompt_list_filtered_to_one_campaign_and_file_leaves_out_those_columns(client, admin_user, campaign):
    client.force_login(admin_user)
    _upload(client, campaign, "p.jsonl", '{"prompt": "one"}\n')
    url = reverse("admin:labeling_prompt_changelist")
    everything = client.get(url).content.decode()
    assert "column-campaign" in everything and "column-source_name" in everything and "column-created" in everything
    one_file = client.get(url, {"campaign__id__exact": campaign.pk, "source": "p.jsonl"}).content.decode()
    assert "column-campaign" not in one_file and "column-source_name" not in one_file
    assert "column-short_text" in one_file and "column-created" in one_file


def test_a_chat_prompts_turns_come_before_its_empty_text_field(client, admin_user, campaign):
    prompt = _chat_prompt(campaign)
    client.force_login(admin_user)
    page = client.get(reverse("admin:labeling_prompt_change", args=[prompt.pk])).content.decode()
    assert page.index('name="messages"') < page.index('name="text"')
    plain = Prompt.objects.create(campaign=campaign, text="Plain", content_hash=importers.content_hash(text="Plain", messages=None))
    page = client.get(reverse("admin:labeling_prompt_change", args=[plain.pk])).content.decode()
    assert page.index('name="text"') < page.index('name="messages"')


def test_prompts_added_in_the_admin_get_their_content_hash(client, admin_user, campaign):
    client.force_login(admin_user)
    url = reverse("admin:labeling_prompt_add")
    fields = {"campaign": campaign.pk, "enabled": "on", "priority": "0", "split": "train", "source": "", "external_id": ""}
    assert client.post(url, {**fields, "text": "First", "messages": ""}).status_code == 302
    turns = [{"role": "user", "content": "Second"}]
    assert client.post(url, {**fields, "text": "", "messages": json.dumps(turns)}).status_code == 302
    hashes = set(Prompt.objects.values_list("content_hash", flat=True))
    assert hashes == {importers.content_hash(text="First", messages=None), importers.content_hash(text="", messages=turns)}


def test_the_uploaded_file_name_is_shown_as_text(client, admin_user, campaign):
    client.force_login(admin_user)
    page = _upload(client, campaign, "<img src=x onerror=alert(1)>.jsonl", '{"prompt": ""}\n').content.decode()
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;.jsonl" in page
    page = _upload(client, campaign, "<img src=x onerror=alert(1)>.jsonl", '{"prompt": "ok"}\n').content.decode()
    assert "<img src=x" not in page and "from &lt;img src=x onerror=alert(1)&gt;.jsonl (JSONL (prompt text))" in page
