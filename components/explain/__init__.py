"""The `explain` KFP component (component.py), its README and its tests/."""
