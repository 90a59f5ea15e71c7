"""The run context every way of running a notebook opens: JupyterLab, papermill, nbconvert, ``runbook run``.

The offline checks before the first request, the notebook session (lock, record, token cache, sealing on
every ending), the ``Step`` a notebook works through, the widgets and tables a notebook shows, and the
verdicts of checks.
"""
