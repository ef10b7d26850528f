"""Making model files, not running them: SFace/YuNet/face-landmark preparation and the
CLIP ViT-B/32 export. Needed once, at setup; a runtime image may leave this out."""
