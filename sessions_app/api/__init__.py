"""Interfaces for programs: JSON-RPC 2.0 over HTTP (`jsonrpc`) and over a WebSocket (`websocket`),
the method table both serve (`methods`), and the DRF REST API (`rest`).

Thin: each method or view validates its parameters, calls one service (a write) or one read
(`selectors`, `tables`, `targets`), and shapes the answer as TrueNAS does. May import services, the
core and the server's live hub; nothing but the URLconf and the ASGI application imports this room.
"""
