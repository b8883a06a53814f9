"""Send the outbox messages that are due and retake work dead workers left (classifier.recovery).

    manage.py recover          # one round, prints what it did
    manage.py recover --loop   # every OUTBOX_SWEEP_INTERVAL_S until stopped (beat runs the same loop)
"""

import json

from django.core.management.base import BaseCommand

from classifier import recovery


class Command(BaseCommand):
    help = "Send outbox messages the broker did not take, and retake work of dead workers."

    def add_arguments(self, parser):
        parser.add_argument("--loop", action="store_true", help="keep going until stopped")
        parser.add_argument("--interval", type=float, default=None, help="seconds between rounds")

    def handle(self, *args, loop, interval, **options):
        if loop:
            recovery.recover_forever(interval_s=interval)
        else:
            self.stdout.write(json.dumps(recovery.recover_once()))
