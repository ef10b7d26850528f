"""A real mosquitto for tests (see ``facewire.devtools.broker``)."""

from facewire.devtools.broker import Mosquitto, free_port

__all__ = ["Mosquitto", "free_port"]
