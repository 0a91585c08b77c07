"""The experiment grid: its runs, how they are cut into populations, and the worker processes that
train them.
"""
