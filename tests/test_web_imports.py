"""The web process never imports torch, torchvision or onnxruntime.

Models run only in Celery workers; each gunicorn worker that imported them would hold about
half a gigabyte more for nothing. The check runs in a fresh interpreter (this one has long
imported torch), loads everything the web process loads, and on failure names the import
chain that pulled a runtime in.
"""

import json
import os
import subprocess
import sys

from tests.helpers import REPO

HEAVY = ("torch", "torchvision", "onnxruntime")

# What a gunicorn worker loads: the WSGI application (Django set up, middleware built), every
# URL pattern's view (admin, APIs, pages), and the task modules it imports to enqueue work
# (Celery's autodiscovery imports them all on the first .delay()).
WEB_PROCESS = """
import json, sys
import animalsite.wsgi
from django.urls import URLResolver, get_resolver
from animalsite.celery import app

def views(patterns):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from views(pattern.url_patterns)
        else:
            yield pattern.callback

names = {f"{view.__module__}.{getattr(view, 'view_class', view).__name__}"
         for view in views(get_resolver().url_patterns)}
app.loader.import_default_modules()
import classifier.tasks, labeling.tasks
print(json.dumps({"views": sorted(names), "heavy": [m for m in sys.argv[1:] if m in sys.modules]}))
"""


def import_chains(importtime_log: str, targets) -> list[str]:
    """'a -> b -> torch' for each target, from `python -X importtime` output (which lists a
    module after the modules it imported, indented one level deeper than its importer)."""
    rows = []
    for line in importtime_log.splitlines():
        if line.startswith("import time:") and "|" in line and not line.rstrip().endswith("imported package"):
            name = line.split("|", 2)[2]
            rows.append(((len(name) - len(name.lstrip(" "))) // 2, name.strip()))
    chains, path = [], []
    for depth, name in reversed(rows):
        path = path[:depth] + [name]
        if name in targets:
            chains.append(" -> ".join(path))
    return chains


def load_web_process(first: str = "") -> tuple[dict, list[str]]:
    """What the web process loaded, and how a heavy module got in; `first` runs before it."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "animalsite.settings"}
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", first + "\n" + WEB_PROCESS, *HEAVY],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded, import_chains(result.stderr, loaded["heavy"])


def test_the_web_process_imports_no_model_runtime():
    loaded, chains = load_web_process()

    assert {"classifier.views.upload", "labeling.browse_api.ImageViewSet", "classifier.api.training.runs",
            "classifier.api.jobs.job_list", "labeling.api.queue_next", "labeling.views.review",
            "django.contrib.admin.sites.index"} <= set(loaded["views"])
    assert loaded["heavy"] == [], "the web process imported " + ", ".join(loaded["heavy"]) + ":\n" + "\n".join(chains)


def test_the_check_names_the_chain_that_pulls_torch_in():
    # The same harness, with one import of the serving code: it must see torch and say how.
    loaded, chains = load_web_process(first="import classifier.ml.predict")

    assert "torch" in loaded["heavy"]
    assert any(chain.startswith("classifier.ml.predict -> ") and chain.endswith(" -> torch")
               for chain in chains), chains
