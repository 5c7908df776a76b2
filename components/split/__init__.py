"""The `split` KFP component (component.py), its README and its tests/."""
