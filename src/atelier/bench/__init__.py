"""``atelier bench``: the project's performance record, measured in one run on this machine.

Figures are medians of a few runs after a warm-up; ratios compare two figures taken in the same
process, which is the only comparison that survives a noisy machine.
"""
