"""Development tooling no running service needs: a private mosquitto for tests and
benchmarks, screenshots of the monitor pages. A runtime image may leave this out."""
