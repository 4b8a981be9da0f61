"""``steer oracle``: what a fine-tuned model's hidden states say about where and how to steer.

- :mod:`~steer_cli.oracle.stream`: the base model run with the fine-tuned one alongside, layer by
  layer (hooks), steered by the oracle or by fitted maps;
- :mod:`~steer_cli.oracle.linalg`: the numbers (MLP shares, spectra, least squares, principal
  angles) as pure functions of token matrices;
- :mod:`~steer_cli.oracle.inputs`: the two models and the sample of sequences;
- :mod:`~steer_cli.oracle.layers`: the per-layer analyses, streamed; :mod:`~steer_cli.oracle.kl`:
  KL to the fine-tuned model;
- :mod:`~steer_cli.oracle.analysis`: the analyses end to end, as one JSON-ready dict;
- :mod:`~steer_cli.oracle.plots` / :mod:`~steer_cli.oracle.render`: the PNGs (matplotlib, Agg)
  and the terminal summary.
"""
