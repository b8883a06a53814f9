"""Classify image files with the production model and print one JSON line per image.

Nothing is written to the database: this is for trying the model on files at hand.
Files that are not usable images get an "error" line; the command then exits with status 1.
"""

import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from classifier import selectors, services, serving
from classifier.ml.images import InvalidImage, decode_image

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"})
BATCH_SIZE = 16


def image_files(paths: list[str]) -> list[Path]:
    """Files as given, and the image files under folders (sorted); CommandError for a missing path."""
    found = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise CommandError(f"{name}: no such file or directory")
    return found


class Command(BaseCommand):
    help = "Print the production model's top-k classes for image files or folders, one JSON line each."

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, or folders to search")
        parser.add_argument("--top-k", type=int, default=settings.PREDICTION_TOP_K)

    def handle(self, *args, paths, top_k, **options):
        if top_k < 1:
            raise CommandError("--top-k must be at least 1")
        files = image_files(paths)
        version = selectors.production_model() or services.zero_shot_version_sync()
        predictor = serving.get_predictor(version)
        failed = 0
        for start in range(0, len(files), BATCH_SIZE):
            batch = files[start:start + BATCH_SIZE]
            lines, images = {}, {}  # by position in the batch: a file may be named twice
            for i, path in enumerate(batch):
                try:
                    images[i] = decode_image(path.read_bytes(), max_pixels=settings.UPLOAD_MAX_PIXELS).image
                except (InvalidImage, OSError) as e:
                    lines[i] = {"path": str(path), "error": str(e)}
            for i, result in zip(images, predictor.predict(list(images.values()), top_k=top_k)):
                top = [{"label": s.label, "p": round(s.p, 6)} for s in result.top]
                lines[i] = {"path": str(batch[i]), "top": top, "model_version": version.name}
            for i in range(len(batch)):
                self.stdout.write(json.dumps(lines[i]))
            failed += sum("error" in line for line in lines.values())
        if failed:
            raise CommandError(f"{failed} of {len(files)} files could not be classified", returncode=1)
