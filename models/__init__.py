"""Everything that turns pixels into a vector, and nothing that knows about MQTT.

The chain (``FacePipeline``) is detect → FaceMesh (mask + landmarks) → align → embed,
producing one ``Face`` record per face:

>>> import numpy as np
>>> from facewire.models import FacePipeline, PipelineConfig
>>> pipeline = FacePipeline(PipelineConfig(model="sface"))       # doctest: +SKIP
>>> faces = pipeline.get(np.zeros((480, 640, 3), np.uint8))      # doctest: +SKIP
>>> faces                                                          # doctest: +SKIP
[]
"""

from facewire.config.schema import DetectorConfig, PipelineConfig
from facewire.models.face import Face, Quality
from facewire.models.pipeline import FacePipeline

__all__ = ["DetectorConfig", "Face", "FacePipeline", "PipelineConfig", "Quality"]
