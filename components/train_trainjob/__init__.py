"""The `train_trainjob` KFP component (component.py), its README and its tests/."""
