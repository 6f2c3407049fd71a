"""The asdzoo version, stamped into every saved model (its own module so nothing imports the package root)."""

__version__ = "0.1.0"
