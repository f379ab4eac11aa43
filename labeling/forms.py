from django import forms

from labeling.importers import FORMATS, PREFERENCE_USES
from labeling.models import Campaign, Choice


class PromptUploadForm(forms.Form):
    campaign = forms.ModelChoiceField(queryset=Campaign.objects.all())
    file = forms.FileField(help_text="JSONL (prompt or messages), CSV with a 'prompt' column, or HH-RLHF JSONL.")
    format = forms.ChoiceField(
        choices=[("", "Detect from the file name")] + [(f, f) for f in FORMATS], required=False
    )


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


class HeldoutSplitForm(forms.Form):
    fraction = forms.FloatField(min_value=0.0, max_value=1.0, initial=0.1)
    seed = forms.IntegerField(initial=0, help_text="The same seed always gives the same split.")


class GoldAnswerForm(forms.Form):
    gold_choice = forms.ChoiceField(
        choices=Choice.choices, label="Gold answer", help_text="The answer every selected pair is known to have."
    )
