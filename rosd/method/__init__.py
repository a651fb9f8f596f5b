"""The method's science: presets, prompts, reflection parsing, groups and teacher contexts, losses,
the objective's per-token terms, and token scoring. Pure functions of tensors and rows; imports only
torch (and the standard library), never another rosd package.
"""
