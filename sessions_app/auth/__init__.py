"""The core of who is calling: credentials, second factors and the secrets they rest on.

Imported by services and interfaces, never importing them.
"""
