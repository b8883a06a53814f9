"""Helpers for tests: real photos, generated images, waiting without sleeping blindly."""

import io
import os
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from PIL import Image as PILImage

REPO = Path(__file__).resolve().parent.parent
# Real photos that ship with the repo (attributed in its README.md), so a fresh clone needs nothing beside it.
DATASET = REPO / "tests" / "data" / "caltech101-subset"
DEMO_PHOTOS = REPO / "demo" / "photos"


def demo_photo(label: str, index: int = 0) -> Path:
    return sorted((DEMO_PHOTOS / label).glob("*.jpg"))[index]


def make_image_bytes(fmt: str = "PNG", size=(64, 48), mode: str = "RGB", color=(200, 120, 40), **save) -> bytes:
    im = PILImage.new(mode, size, color)
    out = io.BytesIO()
    im.save(out, format=fmt, **save)
    return out.getvalue()


def worker_database_url(connection_settings: dict) -> str:
    """A URL for the test database that pytest-django created, for other processes."""
    engine = connection_settings["ENGINE"]
    if engine.endswith("sqlite3"):
        return f"sqlite:///{connection_settings['NAME']}"
    url = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit((url.scheme, url.netloc, "/" + connection_settings["NAME"], url.query, url.fragment))


def wait_for(predicate, *, timeout: float = 60.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def log_in(page, base_url: str, username: str, password: str) -> None:
    page.goto(f"{base_url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")


def logged_in_member(client, django_user_model, username: str, role: str):
    """A user in one of the roles (no password), logged in on the Django test client."""
    from labeling.roles import role_group

    user = django_user_model.objects.create_user(username)
    user.groups.add(role_group(role))
    client.force_login(user)
    return user
