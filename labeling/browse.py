"""The data browser's reads: one FilterSet for the /images/ page and GET /api/images/, and
keyset pagination over ImageSummary's indexes (order by (sort key, id); no OFFSET, no COUNT)."""

import base64
import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import django_filters as filters
from django import forms
from django.contrib.auth import get_user_model
from django.db.models import Case, Count, Exists, F, OuterRef, QuerySet, When
from django.db.models.fields.tuple_lookups import Tuple, TupleGreaterThan, TupleLessThan
from django.utils import timezone

from classifier.errors import Rejected
from classifier.ml.datasets import SPLITS
from classifier.models import Image, Prediction, Upload

from .agreement import disagreements
from .label_errors import suspected_label_errors, suspected_labels
from .models import Annotation, ImageSummary

PAGE_SIZE = 60
MAX_PAGE_SIZE = 200
# sort parameter -> (summary field, descending)
SORTS = {
    "-created": ("created", True), "created": ("created", False),
    "-confidence": ("confidence", True), "confidence": ("confidence", False),
    "-margin": ("margin", True), "margin": ("margin", False),
}
DEFAULT_SORT = "-created"


class StrictNullBooleanSelect(forms.NullBooleanSelect):
    """Yes/no/any on the page; a value that is none of them reaches the field (and is refused)
    instead of meaning "any"."""

    VALUES = {"true": True, "1": True, "false": False, "0": False}

    def value_from_datadict(self, data, files, name):
        value = data.get(name)
        if value in (None, "", "unknown"):
            return None
        return self.VALUES.get(str(value).lower(), value)


class StrictNullBooleanField(forms.NullBooleanField):
    widget = StrictNullBooleanSelect

    def to_python(self, value):
        result = super().to_python(value)
        if result is None and value not in (None, "", "unknown"):
            raise forms.ValidationError(f"{value!r} is not true or false.")
        return result


class BooleanFilter(filters.BooleanFilter):
    field_class = StrictNullBooleanField


def images_for(user) -> QuerySet[Image]:
    """Every image for annotators, reviewers and staff (view_image); an uploader's own otherwise."""
    images = Image.objects.filter(summary__isnull=False).select_related("summary")
    if user.is_staff or user.has_perm("classifier.view_image"):
        return images.annotate(near_duplicate_shown=F("summary__near_duplicate_of"))
    # A link to an image the uploader may not see would tell them someone else has that photo.
    return images.filter(Exists(Upload.objects.filter(image=OuterRef("pk"), user=user))).annotate(
        near_duplicate_shown=Case(When(Exists(Upload.objects.filter(
            image=OuterRef("summary__near_duplicate_of"), user=user)), then=F("summary__near_duplicate_of"))))


class ImageFilter(filters.FilterSet):
    label = filters.CharFilter(method="filter_label", help_text=(
        "the image's current label, derived from its annotation history: the latest decision of the highest "
        "rank (reviewer, then annotator, then import), undone decisions left out, merged classes under their "
        "new name; `other` for \"not an animal / none of these\". An uploader's claim (feedback) is not a label. "
        "Changes as soon as someone corrects the label."))
    labelled = BooleanFilter(method="filter_labelled", help_text="true: has a current label; false: none")
    predicted = filters.CharFilter(method="filter_predicted", help_text=(
        "the class the production version predicts for the image (images it has not predicted yet are left "
        "out); not a label. With `version`, that version's prediction instead"))
    version = filters.NumberFilter(method="filter_version", help_text=(
        "a model version's id: images it predicted (with `predicted`: predicted as that class); the model "
        "page's confusion-matrix cells link here"))
    disagrees = BooleanFilter(field_name="summary__disagrees",
                                      help_text="true: labelled and the production prediction says another class")
    confidence_min = filters.NumberFilter(field_name="summary__confidence", lookup_expr="gte")
    confidence_max = filters.NumberFilter(field_name="summary__confidence", lookup_expr="lte")
    margin_min = filters.NumberFilter(field_name="summary__margin", lookup_expr="gte",
                                      help_text="top-1 minus top-2 probability of the production prediction")
    margin_max = filters.NumberFilter(field_name="summary__margin", lookup_expr="lte")
    status = filters.ChoiceFilter(choices=Image.Status.choices, help_text="the image's processing status")
    split = filters.ChoiceFilter(field_name="summary__split", choices=[(s, s) for s in SPLITS], help_text=(
        "train/val/test: the split a dataset snapshot puts the image in (by content hash; fixed as data grows)"))
    annotator = filters.CharFilter(method="filter_annotator", help_text="username: images this person labelled")
    uploader = filters.CharFilter(method="filter_uploader", help_text="username: images this person uploaded")
    created_after = filters.DateFilter(method="filter_created_after", help_text="uploaded on or after this day")
    created_before = filters.DateFilter(method="filter_created_before", help_text="uploaded on or before this day")
    suspect = BooleanFilter(method="filter_suspect", help_text=(
        "true: a suspected label error (confident learning on the embeddings disagrees with the label)"))
    annotators_disagree = BooleanFilter(method="filter_annotators_disagree", help_text=(
        "true: two annotators gave different labels and no reviewer has settled it yet"))
    near_duplicate = BooleanFilter(field_name="near_duplicate_shown", lookup_expr="isnull",
                                           exclude=True, help_text="true: looks like an earlier image")

    class Meta:
        model = Image
        fields = []

    @property
    def form(self):
        form = super().form
        for field in form.fields.values():
            if isinstance(field, forms.NullBooleanField):
                field.widget.choices = [("", "any"), ("true", "yes"), ("false", "no")]
        return form

    def filter_label(self, queryset, name, value):
        return queryset.filter(summary__label=value.strip().lower())

    def filter_labelled(self, queryset, name, value):
        return queryset.exclude(summary__label="") if value else queryset.filter(summary__label="")

    def filter_predicted(self, queryset, name, value):
        if self.form.cleaned_data.get("version") is not None:
            return queryset  # filter_version reads it
        return queryset.filter(summary__predicted=value.strip().lower())

    def filter_version(self, queryset, name, value):
        by_version = Prediction.objects.filter(image=OuterRef("pk"), model_version_id=int(value))
        if predicted := self.form.cleaned_data.get("predicted"):
            by_version = by_version.filter(label=predicted.strip().lower())
        return queryset.filter(Exists(by_version))

    # Day bounds as instants in the current time zone, not `created::date`, which no index serves.
    def filter_created_after(self, queryset, name, value):
        return queryset.filter(summary__created__gte=_day_start(value))

    def filter_created_before(self, queryset, name, value):
        return queryset.filter(summary__created__lt=_day_start(value + timedelta(days=1)))

    # The user's id, not a join on the username: PostgreSQL then estimates from that id's own row
    # count whether to walk the sort index (a prolific user) or that user's rows (a rare one).
    def filter_annotator(self, queryset, name, value):
        if (user_id := _user_id(value)) is None:
            return queryset.none()
        undone = Annotation.objects.filter(reverts=OuterRef("pk"))  # an anti-join: reverted_by__isnull scans them all
        decided = Annotation.objects.filter(image=OuterRef("pk"), user_id=user_id,
                                            kind__in=Annotation.LABELLING_KINDS).exclude(Exists(undone))
        return queryset.filter(Exists(decided))

    def filter_uploader(self, queryset, name, value):
        if (user_id := _user_id(value)) is None:
            return queryset.none()
        return queryset.filter(Exists(Upload.objects.filter(image=OuterRef("pk"), user_id=user_id)))

    def filter_annotators_disagree(self, queryset, name, value):
        open_disputes = disagreements()
        return queryset.filter(id__in=open_disputes) if value else queryset.exclude(id__in=open_disputes)

    def filter_suspect(self, queryset, name, value):
        suspects = suspected_label_errors()
        return queryset.filter(id__in=suspects) if value else queryset.exclude(id__in=suspects)


def _user_id(username: str) -> int | None:
    return get_user_model().objects.filter(username=username).values_list("id", flat=True).first()


def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def filtered(user, params) -> tuple[QuerySet[Image], ImageFilter]:
    """The user's images narrowed by the query parameters (invalid ones are reported by the form)."""
    fs = ImageFilter(params, queryset=images_for(user))
    return (fs.qs if fs.is_valid() else images_for(user).none()), fs


def latest_predictions(image_ids: list[int]) -> dict[int, Prediction]:
    """image id -> its latest prediction (any version), for a page of images in one query."""
    latest = {}
    rows = (Prediction.objects.filter(image_id__in=image_ids).select_related("model_version")
            .defer("probabilities", "model_version__card")  # JSON the page never shows; slow to decode
            .order_by("image_id", "-created", "-id"))
    for prediction in rows:
        latest.setdefault(prediction.image_id, prediction)
    return latest


# --- keyset pagination -----------------------------------------------------------------------

@dataclass
class Page:
    images: list[Image]
    next_cursor: str | None
    sort: str


def _encode(value, image_id: int) -> str:
    if isinstance(value, datetime):
        value = value.isoformat()
    return base64.urlsafe_b64encode(json.dumps([value, image_id]).encode()).decode()


def _decode(cursor: str, key: str):
    value, image_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    if key == "created":
        value = datetime.fromisoformat(value)
    return value, int(image_id)


def page(queryset: QuerySet[Image], *, sort: str = DEFAULT_SORT, cursor: str | None = None,
         size: int = PAGE_SIZE) -> Page:
    """One page after `cursor`, in (sort key, id) order. Sorting by confidence or margin lists
    predicted images only (the others have no value to order by)."""
    sort = sort if sort in SORTS else DEFAULT_SORT
    key, descending = SORTS[sort]
    field = f"summary__{key}"
    if key != "created":
        queryset = queryset.filter(**{f"{field}__isnull": False})
    if cursor:
        try:
            value, last_id = _decode(cursor, key)
        except (ValueError, TypeError):
            raise InvalidCursor("This page link is broken; start from the first page.") from None
        # A row comparison on the index's own columns, (key, image) < (last key, last id): PostgreSQL
        # starts the index scan there and estimates the rows left right. (key < v OR key = v AND
        # id < n) made it walk the index from the start, 90,000 rows for a deep page.
        after = TupleLessThan if descending else TupleGreaterThan
        queryset = queryset.filter(after(Tuple(F(field), F("summary__image_id")), (value, last_id)))
    order = [f"-{field}", "-id"] if descending else [field, "id"]
    size = max(1, min(int(size), MAX_PAGE_SIZE))
    rows = list(queryset.order_by(*order)[: size + 1])
    more = len(rows) > size
    rows = rows[:size]
    next_cursor = _encode(getattr(rows[-1].summary, key), rows[-1].id) if more else None
    return Page(images=rows, next_cursor=next_cursor, sort=sort)


class InvalidCursor(Rejected):
    """A cursor this code did not write (400)."""


def class_figures() -> dict[str, dict[str, int]]:
    """class -> {"predicted": images the production version predicts as it, "suspects": suspected
    label errors labelled as it}, for the labels page's links into the browser."""
    figures: dict[str, dict[str, int]] = {}
    rows = ImageSummary.objects.exclude(predicted="").values_list("predicted").annotate(n=Count("image"))
    for name, n in rows:
        figures.setdefault(name, {"predicted": 0, "suspects": 0})["predicted"] = n
    for suspect in suspected_labels():
        figures.setdefault(suspect.label, {"predicted": 0, "suspects": 0})["suspects"] += 1
    return figures
