"""metascope edge runtime: capture, find cells, classify, log. Runs on a Raspberry Pi.

Imports only the standard library, numpy, pillow, a TFLite interpreter and (lazily, on a Pi)
picamera2; never tensorflow or train/.
"""

__version__ = "0.4.0"
