"""Calibration data for int8 quantization: sources, sampling, statistics. numpy only, no ML framework."""

from .calibset import CalibrationSet, SamplingMethod, make_calibration_set

__all__ = ["CalibrationSet", "SamplingMethod", "make_calibration_set"]
