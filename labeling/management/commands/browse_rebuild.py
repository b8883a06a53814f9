"""Recompute every image's data-browser summary row (after migrating an existing database)."""

from django.core.management.base import BaseCommand

from labeling.summaries import summaries_rebuild


class Command(BaseCommand):
    help = "Recompute the data browser's summary row of every image from the labels and predictions."

    def handle(self, *args, **options):
        self.stdout.write(f"{summaries_rebuild()} summary rows written.")
