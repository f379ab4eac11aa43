"""REST API for annotators (next pair, submit, skip, my stats) and staff (campaign progress).

Choices travel in terms of the sides shown: the client sends "left", "right",
"tie" or "both_bad" for the assignment it was given, and the server maps that
to completion a/b with the order it recorded when it leased the pair.
"""

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from labeling import login_guard, quality, queue, selectors, services
from labeling.models import Assignment, Campaign, FlagReason, StrengthScale
from labeling.rendering import markdown_to_safe_html
from labeling.reliability import AnnotatorReliability

SHOWN_CHOICES = ("left", "right", "tie", "both_bad")
NOT_A_MEMBER = "This campaign is open to its chosen annotators only; ask your lead to add you."


# --- Output -------------------------------------------------------------------


class TextSerializer(serializers.Serializer):
    text = serializers.CharField(allow_blank=True, help_text="The raw text (empty for a chat prompt).")
    html = serializers.CharField(
        allow_blank=True, help_text="The text as sanitized HTML (markdown rendered, raw HTML shown as text)."
    )


class TurnSerializer(TextSerializer):
    role = serializers.CharField()


class PromptSerializer(TextSerializer):
    messages = TurnSerializer(many=True, allow_null=True, help_text="Chat turns, or null for a plain-text prompt.")


class PairSerializer(serializers.Serializer):
    assignment_id = serializers.IntegerField()
    campaign_id = serializers.IntegerField()
    expires_at = serializers.DateTimeField(help_text="The lease ends here; a later submit is refused.")
    prompt = PromptSerializer()
    left = TextSerializer(help_text="The completion shown on the left.")
    right = TextSerializer(help_text="The completion shown on the right.")
    choices = serializers.ListField(child=serializers.ChoiceField(SHOWN_CHOICES), help_text="Choices allowed here.")
    strength_scale = serializers.ChoiceField(
        StrengthScale.choices, help_text="three: strength 1-3 may go with left/right."
    )
    rationale_required = serializers.BooleanField()


def _text(text: str) -> dict:
    return {"text": text, "html": markdown_to_safe_html(text)}


def pair_data(assignment: Assignment, campaign: Campaign) -> dict:
    """The pair as the annotator sees it, in PairSerializer's shape; gold pairs look exactly like the others.

    Built as a plain dict: running it through the nested serializer cost more
    CPU (~1.3 ms) than the rest of the request's Python.
    """
    # From the statement that leased or found the pair (labeling.queue); read here only if it came without.
    texts = getattr(assignment, "pair_texts", None) or queue.pair_texts(assignment_id=assignment.pk)
    left, right = (texts.a, texts.b) if assignment.left_is_a else (texts.b, texts.a)
    messages = [{"role": m["role"], **_text(m["content"])} for m in texts.messages] if texts.messages else None
    return {
        "assignment_id": assignment.pk,
        "campaign_id": campaign.pk,
        "expires_at": assignment.leased_until.isoformat().replace("+00:00", "Z"),
        "prompt": {**_text(texts.prompt), "messages": messages},
        "left": _text(left),
        "right": _text(right),
        "choices": selectors.campaign_allowed_choices(campaign=campaign),
        "strength_scale": campaign.strength_scale,
        "rationale_required": campaign.rationale_required,
    }


class ErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    detail = serializers.CharField()


class ExpiredSerializer(ErrorSerializer):
    next = PairSerializer(
        required=False,
        allow_null=True,
        help_text="With lease_expired only: the pair to judge instead, or null when none is left.",
    )


class JudgmentOutSerializer(serializers.Serializer):
    judgment_id = serializers.IntegerField()
    assignment_id = serializers.IntegerField()
    choice = serializers.ChoiceField(SHOWN_CHOICES, help_text="As shown (left/right/tie/both_bad).")
    stored_choice = serializers.ChoiceField(["a", "b", "tie", "both_bad"], help_text="As stored (completion a/b).")
    strength = serializers.IntegerField(allow_null=True)
    created = serializers.BooleanField(help_text="False when this repeated an earlier submit or revised an undone one.")
    revised = serializers.BooleanField(help_text="True when this answered an undone judgment again (the old answer is kept as a revision).")


class UndoOutSerializer(serializers.Serializer):
    judgment_id = serializers.IntegerField()
    assignment_id = serializers.IntegerField()
    choice = serializers.ChoiceField(SHOWN_CHOICES, help_text="The answer being undone, as shown.")
    strength = serializers.IntegerField(allow_null=True)
    rationale = serializers.CharField(allow_blank=True)
    reopened_until = serializers.DateTimeField(help_text="A submit until then replaces the answer.")


class ProgressSerializer(serializers.Serializer):
    mine_today = serializers.IntegerField()
    mine_total = serializers.IntegerField()
    daily_goal = serializers.IntegerField()
    today_fraction = serializers.FloatField()
    campaign_done = serializers.IntegerField(
        help_text="Your judgments in this campaign (a gold pair counts like any other, so none is told apart)."
    )
    campaign_needed = serializers.IntegerField(
        help_text="campaign_done plus the pairs you hold leases on and those the queue may still give you "
        f"(those counted up to {selectors.PAIRS_LEFT_COUNTED:,}: see campaign_more)."
    )
    campaign_more = serializers.BooleanField(
        help_text=f"True when more pairs are open to you than campaign_needed counts (over {selectors.PAIRS_LEFT_COUNTED:,} left)."
    )
    campaign_fraction = serializers.FloatField()
    campaign_state = serializers.ChoiceField(
        ["no_pairs", "open", "done"], help_text="no_pairs before generation, done when every regular pair has its N judgments."
    )


class CampaignSerializer(serializers.ModelSerializer):
    choices = serializers.SerializerMethodField()

    class Meta:
        model = Campaign
        fields = ["id", "name", "guidelines", "annotations_per_pair", "strength_scale", "rationale_required", "choices"]

    def get_choices(self, campaign: Campaign) -> list[str]:
        return selectors.campaign_allowed_choices(campaign=campaign)


_INTERVAL_LOW, _INTERVAL_HIGH = "95% Beta posterior interval, low end.", "95% Beta posterior interval, high end."


def _nullable(help_text: str) -> serializers.FloatField:
    return serializers.FloatField(allow_null=True, help_text=help_text)


class AnnotatorQualitySerializer(serializers.Serializer):
    username = serializers.CharField()
    judgments = serializers.IntegerField()
    median_time_ms = serializers.FloatField(allow_null=True)
    gold_seen = serializers.IntegerField()
    gold_accuracy = serializers.FloatField(allow_null=True)
    left = serializers.IntegerField()
    right = serializers.IntegerField()
    left_share = serializers.FloatField(allow_null=True)
    left_p_value = serializers.FloatField(allow_null=True, help_text="Two-sided binomial test against 1/2.")
    tie_rate = serializers.FloatField(allow_null=True)
    both_bad_rate = serializers.FloatField(allow_null=True)
    reliability = _nullable(
        "Estimated probability of a correct answer (Dawid-Skene over these judgments); null when none of theirs is "
        "on a pair shared with another annotator or on a gold pair."
    )
    reliability_low, reliability_high = _nullable(_INTERVAL_LOW), _nullable(_INTERVAL_HIGH)
    decisive_accuracy = _nullable(
        "The same estimate on their judgments of pairs where one side is truly better: how often they pick it; null "
        "when none of theirs is."
    )
    decisive_accuracy_low, decisive_accuracy_high = _nullable(_INTERVAL_LOW), _nullable(_INTERVAL_HIGH)
    left_bias = serializers.FloatField(
        allow_null=True, help_text="P(left | right truly better) - P(right | left truly better)."
    )


class CampaignQualitySerializer(serializers.Serializer):
    comparisons = serializers.IntegerField()
    open = serializers.IntegerField()
    complete = serializers.IntegerField()
    gold = serializers.IntegerField()
    done = serializers.IntegerField()
    needed = serializers.IntegerField()
    fraction = serializers.FloatField()
    judgments = serializers.IntegerField()
    judgments_last_hour = serializers.IntegerField()
    judgments_last_day = serializers.IntegerField()
    median_time_ms = serializers.FloatField(allow_null=True)
    gold_accuracy = serializers.FloatField(allow_null=True)
    left_share = serializers.FloatField(allow_null=True)
    left_p_value = serializers.FloatField(allow_null=True)
    tie_rate = serializers.FloatField(allow_null=True)
    both_bad_rate = serializers.FloatField(allow_null=True)
    agreement_pairs = serializers.IntegerField(help_text="Pairs with two or more judgments.")
    pairwise_agreement = serializers.FloatField(allow_null=True)
    krippendorff_alpha = serializers.FloatField(allow_null=True, help_text="Nominal.")
    annotators = AnnotatorQualitySerializer(many=True)


def _tally_data(tally: quality.Tally) -> dict:
    return {
        "judgments": tally.judgments,
        "median_time_ms": tally.median_time_ms,
        "gold_seen": tally.gold_seen,
        "gold_accuracy": tally.gold_accuracy,
        "left": tally.left,
        "right": tally.right,
        "left_share": tally.left_share,
        "left_p_value": tally.left_p_value,
        "tie_rate": tally.tie_rate,
        "both_bad_rate": tally.both_bad_rate,
    }


# The API's names for AnnotatorReliability's fields.
_RELIABILITY_FIELDS = {
    "reliability": "reliability",
    "reliability_low": "low",
    "reliability_high": "high",
    "decisive_accuracy": "decisive",
    "decisive_accuracy_low": "decisive_low",
    "decisive_accuracy_high": "decisive_high",
    "left_bias": "left_bias",
}


def _reliability_data(reliability: AnnotatorReliability | None) -> dict:
    return {key: None if reliability is None else getattr(reliability, name) for key, name in _RELIABILITY_FIELDS.items()}


def report_data(report: quality.CampaignReport) -> dict:
    return CampaignQualitySerializer(
        {
            **{k: getattr(report, k) for k in ("comparisons", "open", "complete", "gold", "done", "needed")},
            **{k: getattr(report, k) for k in ("judgments_last_hour", "judgments_last_day", "agreement_pairs")},
            "fraction": report.fraction,
            "pairwise_agreement": report.pairwise_agreement,
            "krippendorff_alpha": report.krippendorff_alpha,
            **_tally_data(report.overall),
            "annotators": [
                {"username": name, **_tally_data(t), **_reliability_data(report.annotator_reliability(name))}
                for name, t in report.annotators.items()
            ],
        }
    ).data


def progress_data(*, campaign: Campaign, annotator) -> dict:
    progress = selectors.annotator_progress(
        campaign=campaign, annotator=annotator, daily_goal=settings.LABELING_DAILY_GOAL
    )
    return ProgressSerializer(
        {
            **vars(progress),
            "today_fraction": progress.today_fraction,
            "campaign_fraction": progress.campaign_fraction,
        }
    ).data


# --- Input --------------------------------------------------------------------


class NextInSerializer(serializers.Serializer):
    after = serializers.IntegerField(
        required=False,
        allow_null=True,
        help_text="The assignment now on screen: the answer is another pair (to prefetch), never this one.",
    )


class SubmitInSerializer(serializers.Serializer):
    choice = serializers.ChoiceField(
        SHOWN_CHOICES,
        help_text="In terms of the sides shown for this assignment: left, right, tie or both_bad.",
    )
    strength = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=3, help_text="1 slightly, 2 clearly, 3 much better."
    )
    rationale = serializers.CharField(required=False, allow_blank=True, default="", trim_whitespace=False)
    time_ms = serializers.IntegerField(required=False, allow_null=True, min_value=0, help_text="Time on task.")


# --- Views --------------------------------------------------------------------


def _campaign(request: Request, pk: int) -> Campaign:
    campaign = queue.campaign_for_labeling(pk=pk)
    if campaign is None:
        raise Http404("No campaign open for labeling has this id.")
    if not selectors.campaign_open_to(campaign=campaign, user=request.user):
        raise PermissionDenied(NOT_A_MEMBER)
    return campaign


def _error(exc: services.LabelingError, http_status: int, **extra) -> Response:
    return Response({"code": exc.code, "detail": str(exc), **extra}, status=http_status)


class CampaignListView(APIView):
    @extend_schema(responses=CampaignSerializer(many=True), summary="Campaigns open for labeling")
    def get(self, request: Request) -> Response:
        return Response(CampaignSerializer(selectors.campaigns_open_to(user=request.user), many=True).data)


class NextPairView(APIView):
    @extend_schema(
        request=NextInSerializer,
        responses={
            200: PairSerializer,
            204: OpenApiResponse(description="Nothing left for you in this campaign."),
            403: OpenApiResponse(description="The campaign is open to chosen annotators and you are not one."),
        },
        summary="Lease the next pair to judge",
        description="Returns a pair you already hold if there is one (other than `after`), else leases a new one.",
    )
    def post(self, request: Request, pk: int) -> Response:
        campaign = _campaign(request, pk)
        data = NextInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        assignment = services.assignment_next(
            campaign=campaign, annotator=request.user, after_id=data.validated_data.get("after")
        )
        if assignment is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(pair_data(assignment, campaign))


def _next_after_expiry(request: Request, assignment_id: int) -> dict | None:
    campaign = selectors.campaigns_for_labeling().filter(prompts__comparisons__assignments=assignment_id).first()
    assignment = services.assignment_next(campaign=campaign, annotator=request.user) if campaign else None
    return pair_data(assignment, campaign) if assignment else None


class SubmitView(APIView):
    @extend_schema(
        request=SubmitInSerializer,
        responses={
            201: JudgmentOutSerializer,
            200: OpenApiResponse(JudgmentOutSerializer, description="A repeat of an accepted submit: nothing new stored."),
            409: OpenApiResponse(
                ExpiredSerializer,
                description="lease_expired (with the next pair), assignment_closed (you skipped it) or "
                "already_submitted (with a different answer).",
            ),
        },
        summary="Judge a leased pair",
    )
    def post(self, request: Request, pk: int) -> Response:
        data = SubmitInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            result = services.judgment_submit(assignment_id=pk, annotator=request.user, **data.validated_data)
        except Assignment.DoesNotExist:
            return Response({"code": "not_found", "detail": "No such assignment of yours."}, status=404)
        except services.InvalidJudgment as exc:
            return _error(exc, status.HTTP_400_BAD_REQUEST)
        except services.LeaseExpired as exc:
            return _error(exc, status.HTTP_409_CONFLICT, next=_next_after_expiry(request, pk))
        except services.LabelingError as exc:
            return _error(exc, status.HTTP_409_CONFLICT)
        judgment = result.judgment
        # JudgmentOutSerializer's shape, built as a plain dict (as pair_data is): every value is already
        # a plain int, str or bool, and the serializer cost ~0.3 ms of CPU per submit to copy them.
        body = {
            "judgment_id": judgment.pk,
            "assignment_id": pk,
            "choice": services.choice_to_shown(choice=judgment.choice, left_is_a=judgment.left_is_a),
            "stored_choice": str(judgment.choice),
            "strength": judgment.strength,
            "created": result.created,
            "revised": result.revised,
        }
        return Response(body, status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)


class SkipOutSerializer(serializers.Serializer):
    assignment_id = serializers.IntegerField()
    state = serializers.CharField()


class SkipView(APIView):
    @extend_schema(
        request=None,
        responses={200: SkipOutSerializer, 409: ErrorSerializer},
        summary="Skip a leased pair (it goes back to the pool; you will not see it again)",
    )
    def post(self, request: Request, pk: int) -> Response:
        try:
            assignment = services.assignment_skip(assignment_id=pk, annotator=request.user)
        except Assignment.DoesNotExist:
            return Response({"code": "not_found", "detail": "No such assignment of yours."}, status=404)
        except services.LabelingError as exc:
            return _error(exc, status.HTTP_409_CONFLICT)
        return Response({"assignment_id": assignment.pk, "state": assignment.state})


class UndoView(APIView):
    @extend_schema(
        request=None,
        responses={
            200: UndoOutSerializer,
            404: OpenApiResponse(description="No such assignment of yours."),
            409: OpenApiResponse(ErrorSerializer, description="undo_closed: not judged, too late, or the pair is settled."),
        },
        summary="Undo a judgment: the next submit on this assignment revises it",
        description="Allowed for LABELING_UNDO_WINDOW_S seconds after the answer, while the pair is not settled. "
        "The judgment stays stored (and counted) until the new answer replaces it; the old answer is kept as a revision.",
    )
    def post(self, request: Request, pk: int) -> Response:
        try:
            judgment = services.judgment_reopen(assignment_id=pk, annotator=request.user)
        except Assignment.DoesNotExist:
            return Response({"code": "not_found", "detail": "No such assignment of yours."}, status=404)
        except services.LabelingError as exc:
            return _error(exc, status.HTTP_409_CONFLICT)
        return Response(
            UndoOutSerializer(
                {
                    "judgment_id": judgment.pk,
                    "assignment_id": pk,
                    "choice": services.choice_to_shown(choice=judgment.choice, left_is_a=judgment.left_is_a),
                    "strength": judgment.strength,
                    "rationale": judgment.rationale,
                    "reopened_until": judgment.reopened_until,
                }
            ).data
        )


class FlagInSerializer(serializers.Serializer):
    reason = serializers.ChoiceField(FlagReason.choices)
    note = serializers.CharField(required=False, allow_blank=True, default="", max_length=5000)


class FlagOutSerializer(serializers.Serializer):
    flag_id = serializers.IntegerField()
    assignment_id = serializers.IntegerField()
    reason = serializers.ChoiceField(FlagReason.choices)


class FlagView(APIView):
    @extend_schema(
        request=FlagInSerializer,
        responses={200: FlagOutSerializer, 404: OpenApiResponse(description="No such assignment of yours.")},
        summary="Flag a pair (unsafe, broken, unclear) and move on: you will not see it again",
    )
    def post(self, request: Request, pk: int) -> Response:
        data = FlagInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            flag = services.comparison_flag(assignment_id=pk, annotator=request.user, **data.validated_data)
        except Assignment.DoesNotExist:
            return Response({"code": "not_found", "detail": "No such assignment of yours."}, status=404)
        except services.LabelingError as exc:
            return _error(exc, status.HTTP_400_BAD_REQUEST)
        return Response({"flag_id": flag.pk, "assignment_id": pk, "reason": flag.reason})


class MyStatsView(APIView):
    @extend_schema(responses=ProgressSerializer, summary="My progress today and the campaign's overall")
    def get(self, request: Request, pk: int) -> Response:
        return Response(progress_data(campaign=_campaign(request, pk), annotator=request.user))


class CampaignProgressView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(responses=CampaignQualitySerializer, summary="Staff: progress and annotation quality")
    def get(self, request: Request, pk: int) -> Response:
        campaign = get_object_or_404(Campaign, pk=pk)
        return Response(report_data(quality.campaign_report(campaign=campaign)))


class TokenOutSerializer(serializers.Serializer):
    token = serializers.CharField(help_text='Send it as "Authorization: Token <token>".')


class TokenView(ObtainAuthToken):
    """DRF's obtain_auth_token, through the login guard, handing out tokens that end (labeling.authentication)."""

    parser_classes = api_settings.DEFAULT_PARSER_CLASSES  # ObtainAuthToken names DRF's own, lax JSON parser
    # A client may come back with its expired token still in its headers: logging in must not need it.
    authentication_classes = ()

    @extend_schema(
        summary="Exchange username and password for an API token",
        description="The token you hold while it lasts, else a new one (tokens end after API_TOKEN_LIFETIME_S, "
        "when the password changes, or when the account is deactivated).",
        responses={200: TokenOutSerializer, 429: ErrorSerializer},
    )
    def post(self, request: Request, *args, **kwargs) -> Response:
        credentials = self.get_serializer(data=request.data)
        if not credentials.is_valid():
            if getattr(request, "axes_locked_out", False):  # set by the login guard on this very request
                return Response({"code": "locked_out", "detail": login_guard.lockout_message()}, status=429)
            return Response(credentials.errors, status=status.HTTP_400_BAD_REQUEST)
        token = services.api_token_issue(user=credentials.validated_data["user"])
        return Response({"token": token.key})
