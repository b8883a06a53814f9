"""The outbox: a task to send, written in the transaction that recorded the work it is for.

classifier.enqueue writes one row per task and sends it once the transaction commits; the
sweeper (classifier.recovery) sends again what the broker did not take, and what it took but
no worker ever started (a broker restarted without its queue). The worker marks a message
delivered when the task starts (animalsite.celery), so a message is done with once delivered.
"""

from django.db import models
from django.db.models import Q


class OutboxMessage(models.Model):
    task_name = models.CharField(max_length=200)
    args = models.JSONField(default=list)
    created = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)  # the broker last took it
    delivered_at = models.DateTimeField(null=True, blank=True)  # a worker started the task
    next_attempt = models.DateTimeField()  # the sweeper sends it (again) from then on, until delivered
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)

    class Meta:
        app_label = "classifier"
        ordering = ["id"]
        indexes = [models.Index(fields=["next_attempt"], condition=Q(delivered_at__isnull=True),
                                name="outbox_undelivered")]

    def __str__(self) -> str:
        state = "delivered" if self.delivered_at else "sent" if self.sent_at else "unsent"
        return f"{self.task_name}{tuple(self.args)} ({state}, {self.attempts} attempts)"
