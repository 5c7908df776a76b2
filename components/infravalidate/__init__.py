"""The `infravalidate` KFP component (component.py), its README and its tests/."""
