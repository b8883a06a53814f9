"""The embedded default's broker never shows a worker half a message."""

import os

from kombu import Connection

from animalsite import broker


def test_a_message_appears_in_the_queue_folder_only_once_it_is_whole(tmp_path, monkeypatch):
    folder = tmp_path / "broker"
    folder.mkdir()
    seen_while_writing = []
    encode = broker.str_to_bytes

    def spy(text):
        seen_while_writing.append(sorted(os.listdir(folder)))
        return encode(text)

    monkeypatch.setattr(broker, "str_to_bytes", spy)
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder),
               "control_folder": str(tmp_path / "control")}
    with Connection("filesystem://", transport_options=options) as connection:
        assert isinstance(connection.transport, broker.Transport)
        queue = connection.SimpleQueue("atomic")
        queue.put({"image": 7})
        message = queue.get(timeout=2)
        message.ack()
        queue.close()

    assert seen_while_writing == [[]]  # nothing in the folder while the bytes were being written
    assert message.payload == {"image": 7}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".message-")] == []
