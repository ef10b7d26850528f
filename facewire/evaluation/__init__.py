"""``facewire eval``: the edge's pipeline and the classifier's search, run together
offline on photos and video clips, to measure how well faces are named.

Tooling, like the CLI: it plays both sides, so it may import the edge and the
classifier; no running service imports it.
"""
