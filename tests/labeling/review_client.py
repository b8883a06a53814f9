"""The review API as a client sees it: its endpoints, next items and decisions."""

NEXT = "/api/review/next/"
DECIDE = "/api/review/decisions/"
UNDO = "/api/review/undo/"
SKIP = "/api/review/skip/"


def next_items(client, count: int = 1) -> list[dict]:
    response = client.get(NEXT, {"count": count})
    assert response.status_code == 200, response.content
    return response.json()


def post(client, url: str, data: dict | None = None):
    return client.post(url, data or {}, content_type="application/json")


def decide(client, item: dict, action: str, **extra):
    return post(client, DECIDE, {"token": item["token"], "action": action, "based_on": item["based_on"], **extra})


