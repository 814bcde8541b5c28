"""A real org.freedesktop.Notifications service for tests, run as a subprocess on a private session bus.

    python fake_notification_server.py ADDRESS RECORD_FILE [--mode normal|hang|new-ids] [--capabilities a,b]

Owns the well-known name on the bus at ADDRESS and appends one JSON line per method call to RECORD_FILE,
preceded by `{"event": "ready"}` once the name is owned (tests wait for that line, never sleep).
Notify replies with `replaces_id` when given, else the next id (1, 2, ...); mode `new-ids` always returns a new
id (like servers that mishandle replaces_id); mode `hang` records calls and never replies. Written with jeepney's
blocking API, the library dedupd itself uses. Exits when the bus goes away.
"""

import argparse
import json
import sys
from itertools import count
from typing import Any

from jeepney import HeaderFields, Message, MessageType, new_error, new_method_return
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import DBusConnection, Proxy, open_dbus_connection

NAME = "org.freedesktop.Notifications"
DO_NOT_QUEUE = 4
PRIMARY_OWNER = 1


def _plain(value: Any) -> Any:
    """JSON-friendly form of a D-Bus value (variants in hints arrive as (signature, value) tuples)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return value


class Server:
    def __init__(self, connection: DBusConnection, record: str, mode: str, capabilities: list[str]) -> None:
        self.connection = connection
        self.record = record
        self.mode = mode
        self.capabilities = capabilities
        self.ids = count(1)

    def log(self, entry: dict[str, Any]) -> None:
        with open(self.record, "a") as stream:
            stream.write(json.dumps(entry) + "\n")

    def reply(self, message: Message) -> Message:
        member = message.header.fields.get(HeaderFields.member)
        if member == "Notify":
            replaces_id = message.body[1]
            notification_id = replaces_id if replaces_id and self.mode != "new-ids" else next(self.ids)
            self.log({"member": member, "args": _plain(message.body), "returned": notification_id})
            return new_method_return(message, "u", (notification_id,))
        self.log({"member": member, "args": _plain(message.body)})
        if member == "GetCapabilities":
            return new_method_return(message, "as", (self.capabilities,))
        if member == "GetServerInformation":
            return new_method_return(message, "ssss", ("fake-notifications", "dedupd tests", "1.0", "1.2"))
        if member == "CloseNotification":
            return new_method_return(message)
        return new_error(message, "org.freedesktop.DBus.Error.UnknownMethod", "s", (f"no method {member}",))

    def serve(self) -> None:
        while True:
            try:
                message = self.connection.receive()
            except ConnectionError:
                return
            fields = message.header.fields
            if message.header.message_type is not MessageType.method_call:
                continue
            if fields.get(HeaderFields.interface) not in (NAME, None):
                self.connection.send(new_error(message, "org.freedesktop.DBus.Error.UnknownInterface"))
                continue
            if self.mode == "hang":
                self.log({"member": fields.get(HeaderFields.member), "args": _plain(message.body)})
                continue
            self.connection.send(self.reply(message))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("record")
    parser.add_argument("--mode", choices=("normal", "hang", "new-ids"), default="normal")
    parser.add_argument("--capabilities", default="body")
    options = parser.parse_args()
    connection = open_dbus_connection(options.address)
    (result,) = Proxy(message_bus, connection, timeout=10).RequestName(NAME, DO_NOT_QUEUE)
    if result != PRIMARY_OWNER:
        sys.exit(f"could not own {NAME}: RequestName answered {result}")
    capabilities = [name for name in options.capabilities.split(",") if name]
    server = Server(connection, options.record, options.mode, capabilities)
    server.log({"event": "ready"})
    server.serve()


if __name__ == "__main__":
    main()
