"""steer's benchmark suite (``make bench``: ``bench/run.py``)."""
