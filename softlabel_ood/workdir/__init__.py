"""What a run leaves on disk: the predictions format, config.json and DONE, the metrics log, atomic
files, the lock.
"""
