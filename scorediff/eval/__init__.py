"""Evaluation engines: the sampler benchmark against closed-form truth (``bench``)."""
