"""PASTA: a per-head bias over the prompt's highlighted keys, inside attention.

``method`` (the steering method) and ``attention`` (the functions registered with transformers'
attention interface) load torch; ``heads`` and ``spans`` do not, so option parsing can use them.
"""
