"""asdzoo: a model zoo for machine-sound anomaly detection."""
__version__ = "0.1.0"
