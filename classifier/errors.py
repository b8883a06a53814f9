"""What services raise when a request cannot be done; the API's one handler maps each to a status.

Services raise these with a message written for the person who asked; views and the API never
build error bodies by hand (classifier.api.errors turns them into `{"detail": ...}`).
"""


class Rejected(ValueError):
    """The request itself is wrong (400): an unknown option, a missing field, a bad file."""

    def body(self) -> dict:
        return {"detail": str(self)}


class Conflict(ValueError):
    """The request was based on something no longer true (409): nothing was written."""

    def body(self) -> dict:
        return {"detail": str(self)}


def unavailable_errors() -> tuple[type[BaseException], ...]:
    """The database or the broker (or the Redis cache) away for a moment: 503 with a Retry-After,
    never a 500 (classifier.api.errors for the API, animalsite.errors for every other page)."""
    from django.db import InterfaceError, OperationalError
    from kombu.exceptions import OperationalError as BrokerError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return (OperationalError, InterfaceError, BrokerError, RedisConnectionError, RedisTimeoutError, ConnectionError)


def unavailable_body(exc: BaseException, retry_after: int) -> dict:
    from django.db import Error as DatabaseError

    what = "database" if isinstance(exc, DatabaseError) else "task queue"
    return {"detail": f"The {what} is unavailable for a moment. Try again in {retry_after} seconds.",
            "retry_after": retry_after}
