"""Large-batch training (LARS, LAMB, SGD-momentum, Nesterov, AdamW) of any registered model on Apache SystemDS, locally or on Spark."""
__version__ = "0.2.0"
