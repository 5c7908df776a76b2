"""The validate step: Great Expectations checks over the manifest and its results page."""
