"""``steer serve``: a run (or a model) behind an OpenAI-compatible HTTP API.

- ``schemas``: the request bodies, strict (an unknown field is a 400, not silently ignored);
- ``errors``: every failure as OpenAI's error object (``{"error": {message, type, param, code}}``);
- ``engine``: the model side: prompts encoded and generated exactly as ``steer generate`` does,
  many requests in one left-padded batch, prompt log-probabilities for ``echo``;
- ``batching``: the worker thread that owns the model and collects concurrent requests into
  batches;
- ``app``: the FastAPI application and its routes (``/v1/models``, ``/v1/completions``,
  ``/v1/chat/completions``, server-sent-event streaming).
"""
