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
