"""The HTML pages' templates and their one Jinja environment (templates.pages)."""
