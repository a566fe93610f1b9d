"""Protocol drivers: each turns a transport's bytes into streams for the exchange
(http1.py, http2.py) or runs a session an upgrade handed the connection to (websocket.py)."""
