"""Records: the sealed change record of every run, and what reads it.

The archive's store (opening, sealing, listing, recovering a killed run's record), integrity (manifest,
hash chain, signature), the HTML rendering, ``show``/``records``/history views and the diff of two runs.
"""
