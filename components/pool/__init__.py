"""The `pool` KFP component (component.py), its README and its tests/."""
