"""From scored runs to answers: which run is which, statistics over seeds, the claims, figures and
the report.
"""
