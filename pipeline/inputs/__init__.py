"""Inputs of a build: the reference model (.keras, legacy .h5, SavedModel), the data and its preprocessing,
the built-in examples and their teachers, and where calibration samples come from."""
