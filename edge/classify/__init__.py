"""Classify: the model card, the one definition of model input (preprocess), the TFLite interpreter, and the
Classifier that runs a batch of cells."""
