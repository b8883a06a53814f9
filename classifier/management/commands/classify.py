"""Classify image files with the production model and print one JSON line per image.

Nothing is written to the database: this is for trying the model on files at hand.
Files that are not usable images get an "error" line; the command then exits with status 1.
"""

import json

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from classifier import registry, serving
from classifier.ml.batch import predict_files
from classifier.ml.images import image_files

BATCH_SIZE = 16


class Command(BaseCommand):
    help = "Print the production model's top-k classes for image files or folders, one JSON line each."

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, or folders to search")
        parser.add_argument("--top-k", type=int, default=settings.PREDICTION_TOP_K)

    def handle(self, *args, paths, top_k, **options):
        if top_k < 1:
            raise CommandError("--top-k must be at least 1")
        try:
            files = image_files(paths)
        except FileNotFoundError as e:
            raise CommandError(str(e)) from None
        version = registry.serving_version()
        predictor = serving.get_predictor(version)
        failed = 0
        for line in predict_files(predictor, files, top_k=top_k, batch_size=BATCH_SIZE,
                                  max_pixels=settings.UPLOAD_MAX_PIXELS):
            if "error" in line:
                failed += 1
            else:
                line["model_version"] = version.name
            self.stdout.write(json.dumps(line))
        if failed:
            raise CommandError(f"{failed} of {len(files)} files could not be classified", returncode=1)
