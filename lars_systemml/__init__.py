"""LARS large-batch training of LeNet-5 on Apache SystemDS, locally or on Spark."""
__version__ = "0.1.0"
