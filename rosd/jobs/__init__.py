"""How jobs run: config checks, the stage registry and each stage's settings, planning of rounds,
blocks of rounds, the stage worker and the local GPU pool. May import everything below it except
``rosd.cli``.
"""
