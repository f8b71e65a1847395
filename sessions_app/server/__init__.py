"""Interfaces: serving HTTP -- what every response gets on its way out (the Content-Security-Policy).

Issue 19 moves the ASGI glue here too (asgi_http, asgi_worker, the per-process hub, streams). May
import core and services, never imported by them.
"""
