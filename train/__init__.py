"""metascope training: labelled cell folders in, an honestly evaluated int8 TFLite model out."""

import os

# TensorFlow's C++ start-up chatter (CPU feature notices, oneDNN) buries the progress output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
