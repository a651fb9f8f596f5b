"""Loading a model and its tokenizer, and placing θ0 from a local directory, a GGUF or a hub name.
May import ``rosd.io``, ``rosd.method`` and ``rosd.evaluation``.
"""
