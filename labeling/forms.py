import json

from django import forms
from django.core.exceptions import ValidationError

from labeling import importers
from labeling.importers import FORMATS, PREFERENCE_USES
from labeling.models import Campaign, Choice, Prompt

_NEW_CAMPAIGN_FIELDS = ["annotations_per_pair", "strength_scale", "allow_tie", "allow_both_bad", "rationale_required"]


class PromptUploadForm(forms.Form):
    """A prompt file, into an existing campaign or a new one made from the name and settings given here."""

    campaign = forms.ModelChoiceField(
        queryset=Campaign.objects.all(), required=False, empty_label="(a new campaign, named below)"
    )
    file = forms.FileField(help_text="JSONL (prompt or messages), CSV with a 'prompt' column, or HH-RLHF JSONL.")
    format = forms.ChoiceField(
        choices=[("", "Detect from the file name")] + [(f, f) for f in FORMATS], required=False
    )
    new_campaign = forms.CharField(
        max_length=Campaign._meta.get_field("name").max_length, required=False, label="New campaign's name"
    )
    # The new campaign's settings: the model's own fields, so its defaults and choices have one home.
    annotations_per_pair = Campaign._meta.get_field("annotations_per_pair").formfield(required=False, min_value=1)
    strength_scale = Campaign._meta.get_field("strength_scale").formfield(required=False)
    allow_tie = Campaign._meta.get_field("allow_tie").formfield()
    allow_both_bad = Campaign._meta.get_field("allow_both_bad").formfield()
    rationale_required = Campaign._meta.get_field("rationale_required").formfield()

    def __init__(self, *args, can_create_campaign: bool, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.can_create_campaign = can_create_campaign
        if not can_create_campaign:
            for name in ["new_campaign", *_NEW_CAMPAIGN_FIELDS]:
                del self.fields[name]
            self.fields["campaign"].required = True

    def file_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in ["campaign", "file", "format"]]

    def new_campaign_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in ["new_campaign", *_NEW_CAMPAIGN_FIELDS] if name in self.fields]

    def clean(self) -> dict:
        data = super().clean()
        if not self.can_create_campaign:
            return data
        name = (data.get("new_campaign") or "").strip()
        if data.get("campaign") and name:
            self.add_error("new_campaign", "Pick an existing campaign or name a new one, not both.")
        elif not data.get("campaign") and not name:
            self.add_error("campaign", "Pick a campaign, or name a new one below.")
        elif name and Campaign.objects.filter(name=name).exists():
            self.add_error("new_campaign", f"A campaign named {name!r} exists: pick it above.")
        data["new_campaign"] = name
        return data

    def new_campaign_settings(self) -> dict | None:
        """The new campaign's settings (its name is `new_campaign`), or None when an existing one was picked."""
        if self.cleaned_data.get("campaign"):
            return None
        settings = {}
        for name in _NEW_CAMPAIGN_FIELDS:
            value = self.cleaned_data[name]
            settings[name] = Campaign._meta.get_field(name).get_default() if value in (None, "") else value
        return settings


class PreferenceUploadForm(forms.Form):
    campaign = forms.ModelChoiceField(queryset=Campaign.objects.all())
    file = forms.FileField(
        help_text="JSONL: HH-RLHF (chosen/rejected transcripts) or TRL (prompt/chosen/rejected, strings or chat "
        "messages; without a prompt, chosen/rejected are whole conversations). The format is detected per line."
    )
    use_as = forms.ChoiceField(
        choices=[
            (PREFERENCE_USES[0], "Training data"),
            (PREFERENCE_USES[1], "Held-out evaluation pairs"),
            (PREFERENCE_USES[2], "Gold pairs (the preferred answer is the gold answer)"),
        ],
        initial=PREFERENCE_USES[0],
    )

    @property
    def file_fields(self) -> list[forms.BoundField]:
        return list(self)


class HeldoutSplitForm(forms.Form):
    fraction = forms.FloatField(min_value=0.0, max_value=1.0, initial=0.1)
    seed = forms.IntegerField(initial=0, help_text="The same seed always gives the same split.")


class GoldAnswerForm(forms.Form):
    gold_choice = forms.ChoiceField(
        choices=Choice.choices, label="Gold answer", help_text="The answer every selected pair is known to have."
    )


class TurnsWidget(forms.Textarea):
    """The chat turns' JSON, in a textarea that static/labeling/turns.js hides behind rows of role + text.

    Without JavaScript the JSON stays editable as it is.
    """

    class Media:
        js = ["labeling/turns.js"]
        css = {"all": ["labeling/turns.css"]}

    def __init__(self) -> None:
        super().__init__(attrs={"data-turns": "", "data-roles": json.dumps(importers.ROLES), "rows": 6, "cols": 80})


class TurnsField(forms.JSONField):
    """A chat prompt's turns; no turns at all means a plain-text prompt (None)."""

    widget = TurnsWidget
    _PARTS = {"role": "the role ", "content": "the text ", "": ""}

    def clean(self, value: str) -> list[dict] | None:
        turns = super().clean(value)
        if turns in (None, []):
            return None
        try:
            return importers.chat_messages(turns)
        except importers.TurnError as exc:
            if exc.turn is None:
                raise ValidationError(f"The turns {exc.reason}.") from None
            last = " (the last)" if isinstance(turns, list) and exc.turn == len(turns) - 1 else ""
            raise ValidationError(f"Turn {exc.turn + 1}{last}: {self._PARTS[exc.part]}{exc.reason}.") from None


class PromptAdminForm(forms.ModelForm):
    """A prompt is plain text or chat turns; its content hash follows its content (one per campaign)."""

    messages = TurnsField(
        required=False,
        label="Chat turns",
        help_text="A chat prompt's turns in order; the last is the user's (the model answers it). "
        "Leave it empty for a plain-text prompt.",
    )

    class Meta:
        model = Prompt
        fields = "__all__"

    def clean(self) -> dict:
        data = super().clean()
        text, turns = data.get("text", ""), data.get("messages")
        if "messages" in self.errors or "text" in self.errors:
            return data
        if turns and text.strip():
            raise ValidationError("A prompt is plain text or chat turns, not both: empty one of them.")
        if not turns and not text.strip():
            raise ValidationError("Write the prompt's text or add its chat turns.")
        digest = importers.content_hash(text=text, messages=turns)
        campaign = data.get("campaign")
        twins = Prompt.objects.filter(campaign=campaign, content_hash=digest).exclude(pk=self.instance.pk)
        if campaign and twins.exists():
            raise ValidationError("The campaign has a prompt with the same content already.")
        self.instance.content_hash = digest
        return data
