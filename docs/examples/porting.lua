-- Lilush handler idioms (porting.py beside it is the Python). Not run by the tests:
-- it is the Lua side, for comparison.
local server = require("http.server")

local function handle(method, query, args, headers, body, ctx)
    -- [hello]
    if query == "/hello" then
        return "Hello!", 200, { ["content-type"] = "text/plain" }
    end
    -- [/hello]
    -- [args]
    if query == "/greet" then
        local name = args:match("name=([^&]*)") or "stranger"
        return "Hello, " .. name .. "!", 200, { ["content-type"] = "text/plain" }
    end
    -- [/args]
    -- [headers]
    if query == "/whoami" then
        local agent = headers["user-agent"] or "-"
        return headers["x-real-ip"] .. " " .. agent, 200, { ["content-type"] = "text/plain" }
    end
    -- [/headers]
    -- [body]
    if query == "/echo" and method == "POST" then
        local size = body and #body or 0
        return "got " .. size .. " bytes", 200, { ["content-type"] = "text/plain" }
    end
    -- [/body]
    -- [cookies]
    if query == "/login" then
        return "welcome", 200, { ["set-cookie"] = { "session=abc; HttpOnly", "theme=dark" } }
    end
    -- [/cookies]
    -- [cfg-logger]
    if query == "/limits" then
        ctx.logger:log({ event = "limits asked", ip = headers["x-real-ip"] }, "info")
        return "max body " .. ctx.cfg.max_body_size, 200, { ["content-type"] = "text/plain" }
    end
    -- [/cfg-logger]
    -- [short-return]
    if query == "/ok" then
        return "ok", 200
    end
    -- [/short-return]
    -- [socket]
    if query == "/raw" then
        ctx.client:send("HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nraw")
        return nil, nil, nil
    end
    -- [/socket]
    return "not here", 404, { ["content-type"] = "text/plain" }
end

-- [serve]
local srv, err = server.new({ ip = "127.0.0.1", port = 8080 }, handle)
if not srv then error(err) end
srv:serve()
-- [/serve]
