"""A real mosquitto for tests (see ``bus.broker``)."""

from bus.broker import Mosquitto, free_port

__all__ = ["Mosquitto", "free_port"]
