"""The student being trained: its optimizer runtime in one process or sharded under accelerate, and
the checkpoints a round writes and keeps. May import ``rosd.models`` and below, never ``rosd.engines``.
"""
