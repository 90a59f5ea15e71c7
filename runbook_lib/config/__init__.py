"""Configuration, the first floor: what a run is asked to do, checked before anything else happens.

The parameter schema and its strict YAML reader, the list of steps, the clouds and their endpoints, the
secret store, the client-secret rules and the knowledge base of error codes. Nothing here sends a request
or writes a record; everything above reads its parameters from here.
"""
