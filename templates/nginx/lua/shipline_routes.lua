-- Dynamic routing of the stack's nginx (SHIPLINE_NGINX_MODE=dynamic), read by templates/nginx/nginx.conf.j2.
--
-- APP.ENV.localhost goes to the live members of APP_ENV, held in the shared dictionary shipline_routes, so
-- that no membership change and no new app needs a reload: `shipline discover` writes the dictionary through
-- the admin server on a unix socket that only the stack's user can reach, the moment etcd changes (the way
-- APISIX follows etcd). An entry is "ip:port,ip:port" (IPv6 as "[ip]:port"); an empty one is an app with no
-- live instance (503); no entry is a host no app answers to (404). The dictionary survives a reload, not a
-- restart: discover compares the generation it wrote with the one held here and writes everything again.
--
-- Balancing per worker: round robin from a rotating start; a member whose connection failed is skipped for
-- FAIL_TIMEOUT seconds (the template mode's max_fails=1 fail_timeout=2s) and the request tries the next one.
local balancer = require "ngx.balancer"

local routes = ngx.shared.shipline_routes
local FAIL_TIMEOUT = 2
local MAX_TRIES = 3 -- proxy_next_upstream_tries of the template mode

local _M = {}
local parsed = {} -- upstream -> {value = entry, peers = {{address, host, port}, ...}}; per worker
local turn = {} -- upstream -> last start index; per worker
local failed = {} -- "ip:port" -> ngx.now() of its last failed connection; per worker

local UPSTREAM = "^[a-z0-9][a-z0-9-]*_[a-z0-9][a-z0-9-]*$"

local function split(address)
    local host, port = string.match(address, "^(%d+%.%d+%.%d+%.%d+):(%d+)$")
    if not host then
        host, port = string.match(address, "^(%[[0-9a-fA-F:.]+%]):(%d+)$")
    end
    port = tonumber(port)
    if not host or not port or port < 1 or port > 65535 then
        return nil
    end
    return host, port
end

local function peers_of(upstream, value)
    local cached = parsed[upstream]
    if cached and cached.value == value then
        return cached.peers
    end
    local peers = {}
    for address in string.gmatch(value, "[^,]+") do
        local host, port = split(address)
        if host then
            peers[#peers + 1] = { address, host, port }
        end
    end
    parsed[upstream] = { value = value, peers = peers }
    return peers
end

-- access_by_lua: the members of the request's app, or its 404/503 answer.
function _M.route()
    local app, env = ngx.var.shipline_app, ngx.var.shipline_env
    local upstream = app .. "_" .. env
    local value = routes:get("u:" .. upstream)
    if value == nil then
        ngx.status = ngx.HTTP_NOT_FOUND
        ngx.say("no Shipline app answers to host ", ngx.var.host)
        return ngx.exit(ngx.HTTP_NOT_FOUND)
    end
    local peers = peers_of(upstream, value)
    if #peers == 0 then
        ngx.status = ngx.HTTP_SERVICE_UNAVAILABLE
        ngx.say("no live instance of ", app, " in ", env)
        return ngx.exit(ngx.HTTP_SERVICE_UNAVAILABLE)
    end
    local start = (turn[upstream] or 0) % #peers + 1
    turn[upstream] = start
    ngx.ctx.shipline = { peers = peers, start = start, tried = {} }
end

-- balancer_by_lua: the next member for this attempt.
function _M.balance()
    local state = ngx.ctx.shipline
    local peers, now = state.peers, ngx.now()
    if state.current == nil then
        local more = math.min(#peers, MAX_TRIES) - 1
        if more > 0 then
            balancer.set_more_tries(more)
        end
    elseif balancer.get_last_failure() == "failed" then
        failed[state.current] = now
    end
    local pick, fallback
    for i = 0, #peers - 1 do
        local peer = peers[(state.start + i - 1) % #peers + 1]
        if not state.tried[peer[1]] then
            local when = failed[peer[1]]
            if when == nil or now - when >= FAIL_TIMEOUT then
                pick = peer
                break
            end
            fallback = fallback or peer
        end
    end
    pick = pick or fallback or peers[state.start]
    state.current = pick[1]
    state.tried[pick[1]] = true
    local ok, err = balancer.set_current_peer(pick[2], pick[3])
    if not ok then
        ngx.log(ngx.ERR, "shipline routes: cannot use ", pick[1], ": ", err)
        return ngx.exit(ngx.HTTP_BAD_GATEWAY)
    end
end

local function upstreams()
    local names = {}
    for _, key in ipairs(routes:get_keys(0)) do
        if string.sub(key, 1, 2) == "u:" then
            names[#names + 1] = string.sub(key, 3)
        end
    end
    table.sort(names)
    return names
end

local function valid_members(members)
    for address in string.gmatch(members, "[^,]+") do
        if not split(address) then
            return false, "not ip:port: " .. address
        end
    end
    return true
end

-- One line of an update: "generation TOKEN", "full", "set UPSTREAM [a,b]", "delete UPSTREAM".
local function apply(line, named)
    local verb, upstream, members = string.match(line, "^(%S+)%s*(%S*)%s*(%S*)$")
    if verb == "generation" and upstream ~= "" then
        return routes:set("generation", upstream)
    elseif verb == "full" then
        named.full = true
        return true
    elseif verb ~= "set" and verb ~= "delete" then
        return false, "unknown verb"
    end
    if not string.match(upstream, UPSTREAM) then
        return false, "not an upstream name"
    end
    named[upstream] = true
    if verb == "delete" then
        routes:delete("u:" .. upstream)
        return true
    end
    local ok, err = valid_members(members)
    if not ok then
        return false, err
    end
    local stored, problem = routes:safe_set("u:" .. upstream, members)
    if not stored then
        return false, "shared dictionary: " .. problem
    end
    return true
end

-- content_by_lua of the admin server: GET lists the table, POST applies an update (each line on its own:
-- a bad line is named in the answer and harms only itself).
function _M.admin()
    if ngx.req.get_method() == "GET" then
        if ngx.var.uri == "/routes/generation" then
            local generation = routes:get("generation")
            if generation == nil then
                return ngx.exit(ngx.HTTP_NOT_FOUND)
            end
            ngx.say(generation)
            return
        end
        ngx.say("generation ", routes:get("generation") or "-")
        for _, upstream in ipairs(upstreams()) do
            ngx.say(upstream, " ", routes:get("u:" .. upstream))
        end
        return
    end
    if ngx.req.get_method() ~= "POST" then
        return ngx.exit(ngx.HTTP_NOT_ALLOWED)
    end
    ngx.req.read_body()
    local body = ngx.req.get_body_data() or ""
    local named, applied, answer = {}, 0, {}
    for line in string.gmatch(body, "[^\n]+") do
        local ok, err = apply(line, named)
        if ok then
            applied = applied + 1
        else
            answer[#answer + 1] = "rejected " .. line .. ": " .. err
        end
    end
    if named.full then
        for _, upstream in ipairs(upstreams()) do
            if not named[upstream] then
                routes:delete("u:" .. upstream)
            end
        end
    end
    ngx.say("applied ", applied)
    for _, line in ipairs(answer) do
        ngx.say(line)
    end
end

return _M
