"""The classifier, its model dir and card, and the dataset over the preprocess cache."""
