"""docker-compose puts nginx in front of gunicorn, and nginx sends the permission-checked media."""

import re

from tests.compose import OPERATOR_ENV, environment_of, load_compose
from tests.helpers import REPO

NGINX_CONF = REPO / "deploy" / "nginx.conf"


def test_only_nginx_is_published_and_it_proxies_to_gunicorn():
    services = load_compose({**OPERATOR_ENV, "WEB_PORT": "8080"})["services"]
    assert services["nginx"]["ports"] == ["8080:80"]
    assert "ports" not in services["web"]
    conf = NGINX_CONF.read_text()
    assert re.search(r"server web:8000;", conf)
    assert "./deploy/nginx.conf:/etc/nginx/conf.d/default.conf:ro" in services["nginx"]["volumes"]


def test_nginx_sends_media_only_after_the_web_allowed_it():
    services = load_compose(OPERATOR_ENV)["services"]
    env = environment_of(services["web"])
    prefix, media_root = env["MEDIA_ACCEL_REDIRECT_PREFIX"], env["MEDIA_ROOT"]
    assert f"media:{media_root}:ro" in services["nginx"]["volumes"]
    conf = NGINX_CONF.read_text()
    block = re.search(r"location %s \{(.*?)\}" % re.escape(prefix), conf, re.S)
    assert block, f"no location for {prefix}"
    assert "internal;" in block.group(1)  # clients cannot ask for it themselves
    assert f"alias {media_root.rstrip('/')}/;" in block.group(1)
    assert "location /media/" not in conf  # media goes through Django's check, never straight from disk


def test_nginx_buffers_slow_clients_and_accepts_imports_up_to_the_limit():
    conf = NGINX_CONF.read_text()
    assert "proxy_request_buffering on;" in conf
    assert re.search(r"client_header_timeout \d+s;", conf)
    limit_mib = int(re.search(r"client_max_body_size (\d+)m;", conf).group(1))
    from django.conf import settings
    assert limit_mib * 1024 * 1024 >= settings.IMPORT_MAX_BYTES
