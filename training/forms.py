from django import forms
from django.conf import settings

from training.config import JUDGMENT_SOURCES, LOSS_TYPES, REFERENCES, WINNERS, RoundConfig
from training.export import AggregationPolicy

_DEFAULT = RoundConfig()
_AGGREGATION = AggregationPolicy()


class RoundConfigForm(forms.Form):
    """The knobs an admin turns when starting a round by hand (the rest keep RoundConfig's defaults)."""

    beta = forms.FloatField(initial=_DEFAULT.beta, min_value=1e-6)
    learning_rate = forms.FloatField(initial=_DEFAULT.learning_rate, min_value=0.0, max_value=1.0)
    epochs = forms.FloatField(initial=_DEFAULT.epochs, min_value=0.01)
    batch_size = forms.IntegerField(initial=_DEFAULT.batch_size, min_value=1)
    max_length = forms.IntegerField(initial=_DEFAULT.max_length, min_value=8)
    loss_type = forms.ChoiceField(choices=[(t, t) for t in LOSS_TYPES], initial=_DEFAULT.loss_type)
    reference = forms.ChoiceField(
        choices=[(r, r) for r in REFERENCES],
        initial=_DEFAULT.reference,
        help_text="previous: the policy the round starts from; initial: the campaign's first model.",
    )
    lora = forms.BooleanField(initial=_DEFAULT.lora, required=False, label="LoRA (off: full fine-tuning)")
    lora_r = forms.IntegerField(initial=_DEFAULT.lora_r, min_value=1, label="LoRA rank")
    lora_target_modules = forms.CharField(
        initial=",".join(_DEFAULT.lora_target_modules),
        required=False,
        help_text="Comma-separated; empty: the model's attention projections.",
    )
    min_agreement = forms.FloatField(initial=_AGGREGATION.min_agreement, min_value=0.0, max_value=1.0)
    min_judgments = forms.IntegerField(initial=_AGGREGATION.min_judgments, min_value=1)
    winner = forms.ChoiceField(
        choices=[(w, w) for w in WINNERS],
        initial=_AGGREGATION.winner,
        label="Chosen side",
        help_text="votes: the side the pair's votes name; posterior: the side the annotators' reliability model finds "
        "likelier better, each vote weighed by who gave it (a pair a left-clicker and a careless annotator outvoted "
        "is turned, not trained the wrong way).",
    )
    sources = forms.MultipleChoiceField(
        choices=[(s, s) for s in JUDGMENT_SOURCES],
        initial=list(_AGGREGATION.sources),
        widget=forms.CheckboxSelectMultiple,
        label="Judgments from",
        help_text="Whose judgments the round trains and is evaluated on: imported ones are a data set's labels "
        "(import_preferences), simulated ones a script's.",
    )
    gate_min_accuracy = forms.FloatField(
        min_value=0.0,
        max_value=1.0,
        help_text="The 95% lower bound of the candidate's length-controlled held-out accuracy must be above this.",
    )
    gate_min_heldout_pairs = forms.IntegerField(
        min_value=1, help_text="Fewer settled held-out pairs: the round is not evaluated and never promoted."
    )
    gate_tolerance = forms.FloatField(
        initial=_DEFAULT.gate_tolerance,
        min_value=0.0,
        max_value=1.0,
        help_text="How far below zero the 95% lower bound of the paired (candidate - incumbent) held-out score may "
        "go; 0: the candidate must be no worse than the incumbent with 95% confidence.",
    )
    kl_budget = forms.FloatField(
        min_value=0.0, label="KL budget", help_text="Most KL to the reference (nats per sample) a promoted round may have."
    )
    kl_checks = forms.IntegerField(
        initial=_DEFAULT.kl_checks,
        min_value=0,
        label="KL checks",
        help_text="Points of the round kept for the KL budget (after 1/2**(n-1), ..., 1/2 and all of its steps): "
        "the final weights are estimated first, and over the budget the latest point within it is the candidate "
        "(0: none, the gate alone judges the end result).",
    )
    min_posterior = forms.FloatField(
        initial=_DEFAULT.min_posterior,
        min_value=0.0,
        max_value=1.0,
        help_text="Drop pairs whose chosen side is less likely than this to be truly better (the "
        "annotator-reliability posterior), from training and from the gate's held-out evidence; 0 keeps every pair.",
    )
    posterior_smoothing = forms.BooleanField(
        initial=_DEFAULT.posterior_smoothing,
        required=False,
        help_text="Train each pair with label smoothing 1 - its posterior (conservative DPO, per pair; sigmoid loss).",
    )
    regenerate = forms.BooleanField(
        initial=_DEFAULT.regenerate,
        required=False,
        help_text="Queue a generation job with the new policy once promoted.",
    )
    ab_share = forms.FloatField(
        min_value=0.0,
        max_value=1.0,
        label="A/B share",
        help_text="Once promoted, an A/B job of the new policy against the one it replaced samples this share "
        "of the held-out prompts (0: none); human judgments of it rank every policy on /training/.",
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["gate_min_accuracy"].initial = settings.TRAINING_GATE_MIN_ACCURACY
        self.fields["gate_min_heldout_pairs"].initial = settings.TRAINING_GATE_MIN_HELDOUT_PAIRS
        self.fields["kl_budget"].initial = settings.TRAINING_KL_BUDGET
        self.fields["ab_share"].initial = settings.TRAINING_AB_SHARE

    def clean(self) -> dict:
        data = super().clean()
        if self.errors:
            return data
        aggregation = {name: data.pop(name) for name in ("min_agreement", "min_judgments", "sources", "winner")}
        try:
            self.config = RoundConfig.from_dict({**data, "aggregation": aggregation})
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        return data
