"""Interfaces: serving HTTP and WebSocket -- the ASGI glue (`asgi_http`, `asgi_worker`), the
per-process live hub (`live`) and the event streams (`streams`), and what every response gets on its
way out (`csp`, the Content-Security-Policy). May import core and services, never imported by them.
"""
