"""Decisions enqueue the retrain check, one at a time: a check waiting in the queue counts the
labels of the decisions made meanwhile (labeling.services)."""

import pytest
from django.core.cache import caches
from kombu.exceptions import OperationalError

from classifier import recovery
from classifier.models import OutboxMessage, TrainingRun
from labeling import retrain, review_queue, services, tasks
from tests.labeling.factories import predicted_image, with_margin

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_pending_check():
    caches["shared"].delete(retrain.retrain_check_key())
    yield
    caches["shared"].delete(retrain.retrain_check_key())


@pytest.fixture
def enqueued(monkeypatch):
    calls = []
    monkeypatch.setattr(tasks.retrain_if_due, "apply_async", lambda *a, **k: calls.append(k.get("args")))
    return calls


def decide(user, n, django_capture_on_commit_callbacks):
    for i in range(n):
        with django_capture_on_commit_callbacks(execute=True):
            [claim] = review_queue.queue_next(user=user, count=1)
            services.decision_make(user=user, token=claim.token, action="choose", label=("cat", "dog")[i % 2])


def test_a_burst_of_decisions_enqueues_one_check_until_a_worker_takes_it(
        settings, monkeypatch, species, annotator, enqueued, django_capture_on_commit_callbacks):
    settings.RETRAIN_AFTER_LABELS = 10
    for _ in range(12):
        predicted_image(version=species, probs=with_margin(species, 0.1))

    decide(annotator, 8, django_capture_on_commit_callbacks)
    assert len(enqueued) == 1

    # The worker takes the check: 8 labels are not enough, and the next decision enqueues again.
    assert retrain.retrain_check() is None
    decide(annotator, 2, django_capture_on_commit_callbacks)
    assert len(enqueued) == 2

    # That check, run after both decisions, sees all ten labels and asks for a run. (Whether
    # training accepts ten labels depends on which split their hashes fall in: not this test's
    # business, so the request itself is what it looks at.)
    requested = []
    monkeypatch.setattr(retrain, "training_automatic",
                        lambda **kw: requested.append(kw) or TrainingRun(mode=kw["mode"], trigger=kw["trigger"]))
    run = retrain.retrain_check()
    assert requested == [{"mode": settings.RETRAIN_MODE, "trigger": TrainingRun.Trigger.LABELS}]
    assert run.trigger == TrainingRun.Trigger.LABELS


def test_no_check_is_enqueued_when_retraining_after_labels_is_off(
        settings, species, annotator, enqueued, django_capture_on_commit_callbacks):
    settings.RETRAIN_AFTER_LABELS = 0
    predicted_image(version=species, probs=with_margin(species, 0.1))
    decide(annotator, 1, django_capture_on_commit_callbacks)
    assert enqueued == []


def test_a_check_the_broker_did_not_take_waits_in_the_outbox_and_is_sent_once_it_returns(
        settings, monkeypatch, species, annotator, django_capture_on_commit_callbacks):
    settings.RETRAIN_AFTER_LABELS = 10
    for _ in range(2):
        predicted_image(version=species, probs=with_margin(species, 0.1))
    calls, broker = [], {"up": False}

    def apply_async(*args, **kwargs):
        if not broker["up"]:
            raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        calls.append(kwargs.get("args"))

    monkeypatch.setattr(tasks.retrain_if_due, "apply_async", apply_async)
    decide(annotator, 2, django_capture_on_commit_callbacks)  # no error: the decisions are stored
    [message] = OutboxMessage.objects.filter(task_name=retrain.CHECK_TASK)
    assert message.sent_at is None and message.attempts == 1

    broker["up"] = True
    recovery.recover_once()
    recovery.recover_once()
    assert calls == [()]


def test_installations_sharing_a_redis_keep_their_pending_checks_apart(settings):
    mine = retrain.retrain_check_key()
    settings.INFERENCE_QUEUE = "inference-of-another-site"
    assert retrain.retrain_check_key() != mine
