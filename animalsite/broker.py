"""The embedded default's broker: kombu's filesystem transport, with messages that appear whole.

kombu writes a message straight into the folder workers read from, so a worker listing the
folder can take a file that is still empty and die on it (`Unrecoverable error: JSONDecodeError`
at its start, seen in the test suite under load). Here a message is written beside the folder
and renamed into it: a rename within one file system is atomic, so a reader sees all of the
message or none of it.
"""

import os
import tempfile
import uuid
from time import monotonic

from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        folder = os.path.abspath(self.data_folder_out)
        # kombu's own name (time, uuid, queue): readers sort by it and match the queue in it.
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        fd, temporary = tempfile.mkstemp(dir=os.path.dirname(folder), prefix=".message-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(temporary, os.path.join(folder, name))
        except OSError as exc:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise filesystem.ChannelError(f"Cannot add a message to {folder!r}") from exc


class Transport(filesystem.Transport):
    Channel = Channel


def install() -> None:
    """`filesystem://` URLs use this transport in every process that loads the Celery app."""
    TRANSPORT_ALIASES["filesystem"] = "animalsite.broker:Transport"
