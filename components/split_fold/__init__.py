"""The `split_fold` KFP component (component.py), its README and its tests/."""
