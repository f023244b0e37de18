"""Classify: the model card, the one definition of model input (preprocess), the TFLite interpreter, the check of a
model's tensors against its card (tensors), and the Classifier that runs a batch of cells."""
