"""DCASE Task 2 data: file names, datasets, LightningDataModules and the built-in synthetic set."""
