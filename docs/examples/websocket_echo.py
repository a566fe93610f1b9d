"""A WebSocket echo on /chat.

    lilush-http websocket_echo:handle
"""

from lilush_http import websocket


def handle(method, query, args, headers, body, ctx):
    if query == "/chat":
        ws, err = websocket.upgrade(method, headers, ctx, protocols=["chat"])
        if ws is None:
            return None, None, None       # 400, 426 or 503 already answered; err says why
        for message in ws:                # str for text, bytes for binary, until the close
            ws.send("echo: " + message if isinstance(message, str) else message)
        return None, None, None
    return "not here\n", 404, {"content-type": "text/plain"}
