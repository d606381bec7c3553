"""edgepipe: trained Keras/TensorFlow model in, verified int8 artifacts per device family out."""

__version__ = "0.1.0"
