"""Data: FER2013-format readers, the DataModule, augmentation presets and test-time views."""
