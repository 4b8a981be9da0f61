"""Evaluation: the paper's accuracy (batched greedy generation, parsed), log-likelihood scoring,
and ``steer eval`` (lm-eval in-process, AlpacaEval-style judging)."""
