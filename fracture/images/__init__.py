"""Image headers, the one decode path, and the usable-radiograph rule."""
