import gc
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "animalsite.settings")
application = get_wsgi_application()
# What loading the site made (modules, models, settings: ~190,000 objects) lives as long as the
# process. Frozen, the collector's full passes skip it: each cost the request it fell on ~100 ms
# (the p95 spikes of benchmarks/browse.py).
gc.freeze()
