"""The engine: how a change is described, applied and remembered, whatever the resource.

Changes and their results, the executor that applies them (plan first, journal before the record), the
fsynced journal, the tenant lock and the deferred-interrupt window. It knows no Microsoft API: the
executor is handed its clients.
"""
