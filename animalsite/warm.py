"""The web process after loading the site, before its first request."""

import gc


def freeze_loaded_site() -> None:
    """What loading the site makes (modules, models, views: ~190,000 objects) lives as long as the
    process. Frozen, the collector's full passes skip it: each cost the request it fell on ~100 ms
    (the p95 spikes of benchmarks/browse.py)."""
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018  (imports every view now rather than on the first request)
    gc.freeze()
