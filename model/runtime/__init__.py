"""Running a saved model: devices and precision, the int8 OpenVINO backend, early exit,
the classifier users hold, and evidence passages.
"""
