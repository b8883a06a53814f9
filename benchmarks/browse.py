"""The data browser at scale: GET /api/images/ with each single filter and three combined, on
the first page and a deep one (90% of the way through), as a reviewer and as an uploader who sees
200 of the images, over N images whose rows are made directly (shared thumbnail names, a
production prediction each, a label on a third), on a throwaway PostgreSQL database (or, with
--database, one kept between runs). The /images/ page's figures for the same cases and the time a
promotion's summary rewrite takes come with them, as information.

    python -m benchmarks.browse --postgres postgres://postgres@127.0.0.1:5432/postgres --n 100000

Last line: JSON with p95_ms (the API's worst case) and every case's p50/p95. Bar (issue 12): p95 <= 200 ms."""

import argparse
import json
import os
import time

import numpy as np

from benchmarks.harness import postgres_create, postgres_drop

CLASSES = ["dalmatian", "flamingo", "llama", "starfish", "dog", "cat"]


def make_rows(n: int, rng: np.random.Generator) -> None:
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from classifier import registry
    from classifier.models import Image, Prediction, Species, Upload
    from labeling.models import Annotation

    registry.species_create_many(names=CLASSES)
    version = registry.zero_shot_version_sync()
    classes = version.classes
    species = {s.name: s for s in Species.objects.all()}
    users = [get_user_model().objects.create_user(f"user{i}") for i in range(20)]
    now = timezone.now()
    for start in range(0, n, 5000):
        size = min(5000, n - start)
        images = Image.objects.bulk_create([
            Image(sha256=f"{start + i:064x}", original="shared.jpg", preview="shared.jpg", thumbnail="shared.jpg",
                  format="JPEG", original_mode="RGB", width=64, height=48, size_bytes=1000, status="predicted",
                  created=now - timedelta(seconds=int(rng.integers(0, 86400 * 365))))
            for i in range(size)])
        probs = rng.dirichlet(np.full(len(classes), 0.3), size)
        Prediction.objects.bulk_create([
            Prediction(image=im, model_version=version, label=classes[int(p.argmax())], confidence=float(p.max()),
                       top=[{"label": classes[j], "p": float(p[j])} for j in np.argsort(-p)[:5]],
                       probabilities=p.tolist(), backend="bench", model_ms=0.0)
            for im, p in zip(images, probs)])
        Upload.objects.bulk_create([Upload(image=im, user=users[int(rng.integers(0, 20))]) for im in images])
        # A third labelled: half by an import, half by one of the users as an annotator.
        Annotation.objects.bulk_create([
            Annotation(image=im, kind="imported", role="import", species=species[c], label=c) if k % 2 else
            Annotation(image=im, kind="accepted", role="annotator", user=users[k // 2 % 20], species=species[c],
                       label=c)
            for im in images if rng.random() < 0.33
            for c, k in [(CLASSES[int(rng.integers(0, len(CLASSES)))], int(rng.integers(0, 40)))]])


def few_uploads_user(count: int):
    """An uploader (no annotator role) whose uploads are `count` images spread over the dataset."""
    from django.contrib.auth import get_user_model

    from classifier.models import Image, Upload

    user, created = get_user_model().objects.get_or_create(username="bench-uploader")
    if created:
        ids = list(Image.objects.order_by("id").values_list("id", flat=True))
        Upload.objects.bulk_create([Upload(image_id=i, user=user) for i in ids[:: max(1, len(ids) // count)]])
    return user


CASES = {
    "none": {}, "label": {"label": "dog"}, "predicted": {"predicted": "cat"}, "disagrees": {"disagrees": "true"},
    "confidence": {"confidence_min": "0.9"}, "margin": {"margin_max": "0.1"}, "status": {"status": "predicted"},
    "split": {"split": "test"}, "uploader": {"uploader": "user3"}, "annotator": {"annotator": "user3"},
    "created": {"created_after": "2026-06-01"}, "sort_margin": {"sort": "margin"},
    "near_duplicate": {"near_duplicate": "true"},
    "three": {"predicted": "dog", "labelled": "true", "margin_max": "0.3"},
}


def measure(client, params: dict, repeats: int, deep_cursor, path: str = "/api/images/") -> dict:
    out = {}
    for depth in ("first", "deep"):
        query = dict(params)
        if depth == "deep":
            cursor = deep_cursor(params)
            if cursor is None:
                continue
            query["cursor"] = cursor
        client.get(path, query)  # not timed: the first request loads what every later one reuses
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            response = client.get(path, query)
            times.append((time.perf_counter() - started) * 1000.0)
            assert response.status_code == 200, response.content[:300]
        out[depth] = {"p50_ms": round(float(np.percentile(times, 50)), 1),
                      "p95_ms": round(float(np.percentile(times, 95)), 1)}
    return out


def deep_cursor_for(user):
    """A cursor 90% of the way through the filtered, sorted rows (as a reader paging far would hold)."""
    from labeling import browse

    def cursor(params: dict):
        images, _ = browse.filtered(user, params)
        key, descending = browse.SORTS[params.get("sort", browse.DEFAULT_SORT)]
        field = f"summary__{key}"
        order = [f"-{field}", "-id"] if descending else [field, "id"]
        rows = images.filter(**{f"{field}__isnull": False}).order_by(*order).values_list(field, "id")
        total = rows.count()
        if total < 2 * browse.PAGE_SIZE:
            return None
        value, image_id = rows[int(total * 0.9)]
        return browse._encode(value, image_id)

    return cursor


def measure_all(uploader, repeats: int) -> tuple[dict, dict]:
    """Every case over the API as a reviewer, the uploader's own view, and the /images/ page."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    from labeling.roles import role_group

    reviewer, _ = get_user_model().objects.get_or_create(username="bench-reviewer")
    reviewer.groups.add(role_group("reviewer"))
    client, as_uploader = Client(), Client()
    client.force_login(reviewer)
    as_uploader.force_login(uploader)
    cases = {case: measure(client, params, repeats, deep_cursor_for(reviewer)) for case, params in CASES.items()}
    # An uploader sees their own images only (200 of 100,000): the visibility filter on every page.
    cases["uploader_view"] = measure(as_uploader, {}, repeats, deep_cursor_for(uploader))
    # The /images/ page (HTML grid) for the same cases: extra information, not the bar.
    pages = {case: measure(client, params, repeats, deep_cursor_for(reviewer), path="/images/")
             for case, params in CASES.items()}
    return cases, pages


def _worst(cases: dict) -> float:
    return max(r["p95_ms"] for c in cases.values() for r in c.values())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--database", help=(
        "an existing PostgreSQL database URL to use and keep (rows are made only when it has no images), "
        "instead of a throwaway one on --postgres: for measuring again without making 100,000 rows each time"))
    args = parser.parse_args(argv)
    url, name = (args.database, None) if args.database else postgres_create(args.postgres, "bench_browse")
    os.environ.update(DATABASE_URL=url, CELERY_BROKER_URL="filesystem://", DJANGO_SETTINGS_MODULE="animalsite.settings",
                      ALLOWED_HOSTS="testserver,localhost")
    try:
        from django.core.management import call_command
        from django.db import connection

        import animalsite.wsgi  # noqa: F401  (the site as gunicorn loads it, its setup frozen for the collector)
        from classifier.models import Image
        from labeling.summaries import summaries_predictions_switch, summaries_rebuild

        call_command("migrate", verbosity=0)
        rebuild_s = None
        if not Image.objects.exists():
            make_rows(args.n, np.random.default_rng(0))
            started = time.perf_counter()
            summaries_rebuild()
            rebuild_s = round(time.perf_counter() - started, 1)
        # What a promotion costs the summaries (every row's prediction columns rewritten, after it commits).
        started = time.perf_counter()
        summaries_predictions_switch()
        switch_s = round(time.perf_counter() - started, 1)
        uploader = few_uploads_user(200)
        with connection.cursor() as c:
            c.execute("ANALYZE")
        cases, pages = measure_all(uploader, args.repeats)
        result = {"p95_ms": _worst(cases), "n": Image.objects.count(), "page_p95_ms": _worst(pages),
                  "rebuild_s": rebuild_s, "promotion_switch_s": switch_s, "cases": cases, "pages": pages,
                  "cpus": os.cpu_count()}
        print(json.dumps(result))
        return result
    finally:
        from django.db import connections

        connections.close_all()
        if name is not None:
            postgres_drop(args.postgres, name)


if __name__ == "__main__":
    main()
