"""Work whose rows were stored is never lost to a broker that is away (classifier/enqueue.py).

The broker is made unreachable for real: the Celery app is pointed at a closed port, so every
send fails the way it does when Redis is down (kombu's OperationalError after the publish
retries). The request still answers success, the task waits in the outbox, and the sweeper's
round after the broker is back sends it exactly once.
"""

import socket

import pytest
from celery import current_app
from django.core.files.uploadedfile import SimpleUploadedFile

from classifier import enqueue, recovery
from classifier.models import Image, InferenceJob, OutboxMessage
from classifier.uploads import CLASSIFY_TASK
from tests.helpers import demo_photo, logged_in_member

pytestmark = pytest.mark.django_db


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


class Broker:
    """Takes the app's broker away and gives it back; records what is sent while it is up."""

    def __init__(self, monkeypatch):
        self.monkeypatch = monkeypatch
        self.sent: list[tuple[str, list]] = []
        self.urls = {k: current_app.conf[k] for k in ("broker_url", "broker_write_url", "broker_read_url")}
        original = enqueue.send

        def spy(task_name, *args, **kwargs):
            original(task_name, *args, **kwargs)  # raises while the broker is away
            self.sent.append((task_name, list(args)))

        monkeypatch.setattr(enqueue, "send", spy)

    def _point_at(self, urls: dict) -> None:
        current_app._pool = None
        current_app.conf.update(urls)
        current_app.amqp._producer_pool = None

    def down(self) -> None:
        self._point_at(dict.fromkeys(self.urls, f"redis://127.0.0.1:{closed_port()}/0"))

    def up(self) -> None:
        self._point_at(self.urls)


@pytest.fixture
def broker(monkeypatch):
    broker = Broker(monkeypatch)
    yield broker
    broker.up()


def sent_for(broker, task_name: str, arg) -> list:
    return [args for name, args in broker.sent if name == task_name and args == [arg]]


def test_an_upload_answers_201_queued_with_the_broker_down_and_is_sent_once_when_it_returns(
        client, alice, species, broker, django_capture_on_commit_callbacks):
    client.force_login(alice)
    broker.down()
    photo = SimpleUploadedFile("dalmatian.jpg", demo_photo("dalmatian").read_bytes(), content_type="image/jpeg")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/api/images/", {"files": [photo]})

    assert response.status_code == 201, response.content
    [result] = response.json()
    assert result["status"] == Image.Status.QUEUED
    [message] = OutboxMessage.objects.filter(task_name=CLASSIFY_TASK, args=[result["id"]])
    assert message.sent_at is None and message.attempts == 1 and message.last_error

    # Still away: the sweeper's round sends nothing and keeps the message.
    assert recovery.recover_once()["outbox"]["sent"] == 0
    broker.up()
    assert recovery.recover_once()["outbox"]["sent"] == 1
    assert recovery.recover_once()["outbox"]["sent"] == 0  # sent, not yet due again
    assert sent_for(broker, CLASSIFY_TASK, result["id"]) == [[result["id"]]]
    message.refresh_from_db()
    assert message.sent_at is not None and message.last_error == ""


def test_a_batch_job_started_with_the_broker_down_is_planned_once_it_returns(
        client, django_user_model, species, broker, django_capture_on_commit_callbacks):
    logged_in_member(client, django_user_model, "rita", "reviewer")
    image = Image.objects.create(sha256="0" * 64, format="JPEG", width=1, height=1, size_bytes=1)
    broker.down()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/api/jobs/", {"source": "selection", "image_ids": [image.id]},
                               content_type="application/json")

    assert response.status_code == 201, response.content
    job = InferenceJob.objects.get(id=response.json()["id"])
    assert job.status == InferenceJob.Status.QUEUED
    broker.up()
    recovery.recover_once()
    recovery.recover_once()
    assert sent_for(broker, "classifier.tasks.inference_job_plan", job.id) == [[job.id]]


def test_a_message_the_broker_took_but_no_worker_started_is_sent_again(
        settings, species, broker, django_capture_on_commit_callbacks):
    """A broker restarted without its queue loses what it held: the message is sent again once
    OUTBOX_REDELIVER_AFTER_S has passed with no worker starting it, and never once one has."""
    settings.OUTBOX_REDELIVER_AFTER_S = 0
    with django_capture_on_commit_callbacks(execute=True):
        enqueue.on_commit(CLASSIFY_TASK, 10_001)
        started = enqueue.on_commit(CLASSIFY_TASK, 10_002)
    enqueue.outbox_delivered(started.id)  # what the worker does when the task starts

    recovery.recover_once()
    assert sent_for(broker, CLASSIFY_TASK, 10_001) == [[10_001], [10_001]]
    assert sent_for(broker, CLASSIFY_TASK, 10_002) == [[10_002]]


def test_staff_see_the_messages_waiting_in_the_admin(client, django_user_model, broker,
                                                     django_capture_on_commit_callbacks):
    admin = django_user_model.objects.create_superuser("root", password="root-password-1")
    client.force_login(admin)
    broker.down()
    with django_capture_on_commit_callbacks(execute=True):
        enqueue.on_commit(CLASSIFY_TASK, 4242)
    response = client.get("/admin/classifier/outboxmessage/?delivered_at__isnull=True")
    assert response.status_code == 200
    assert b"4242" in response.content and b"Connection refused" in response.content
