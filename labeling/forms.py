from django import forms

from labeling.importers import FORMATS
from labeling.models import Campaign, Choice


class PromptUploadForm(forms.Form):
    campaign = forms.ModelChoiceField(queryset=Campaign.objects.all())
    file = forms.FileField(help_text="JSONL (prompt or messages), CSV with a 'prompt' column, or HH-RLHF JSONL.")
    format = forms.ChoiceField(
        choices=[("", "Detect from the file name")] + [(f, f) for f in FORMATS], required=False
    )


class HeldoutSplitForm(forms.Form):
    fraction = forms.FloatField(min_value=0.0, max_value=1.0, initial=0.1)
    seed = forms.IntegerField(initial=0, help_text="The same seed always gives the same split.")


class GoldAnswerForm(forms.Form):
    gold_choice = forms.ChoiceField(
        choices=Choice.choices, label="Gold answer", help_text="The answer every selected pair is known to have."
    )
