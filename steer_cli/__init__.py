"""steer: activation adapters (post-block steering) and the baselines they compete with."""

__version__ = "0.1.0"
