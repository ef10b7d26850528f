"""facewire: distributed face recognition over MQTT (the ``facewire`` command lives here)."""

__version__ = "0.1.0"
