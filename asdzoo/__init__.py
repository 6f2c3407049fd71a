"""asdzoo: a model zoo for machine-sound anomaly detection (DCASE Task 2) and sound-scene segmentation (Task 4).

import asdzoo
asdzoo.list_models()
model = asdzoo.load("genrep")
"""

from asdzoo.hub import list_models, load, save_pretrained
from asdzoo.version import __version__

__all__ = ["__version__", "list_models", "load", "save_pretrained"]
