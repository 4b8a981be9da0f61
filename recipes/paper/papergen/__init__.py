"""The code behind recipes/paper/generate.py, by concern.

- ``budgets``: the paper's models, parameter arithmetic, ranks, and the Params check
- ``layout``: how a recipe's YAML and header comments are laid out
- ``swept``: Tables 1, 2 and 4 (LR sweep on validation, then 5 seeds)
- ``table3``: Table 3 (instruction tuning, judged AlpacaEval-style)
"""
