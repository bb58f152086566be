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
--
-- A canary: an entry "a,b,|W,c" sends exactly W of every 100 requests (spread evenly, per worker) to the
-- members after the marker (c), the rest to those before it (a, b). While an upstream has a canary, nginx
-- counts, per member, the attempts, their 5xx answers and a latency histogram (buckets of 5 %) in the shared
-- dictionary shipline_stats, which the admin API serves at GET /routes/stats?upstream=NAME: the release
-- flow's canary analysis reads it at the start and the end of its window.
local balancer = require "ngx.balancer"

local routes = ngx.shared.shipline_routes
local stats = ngx.shared.shipline_stats
local LATENCY_STEP = math.log(1.05) -- bucket i holds latencies up to 1.05^i ms
local MAX_BUCKET = 300
local FAIL_TIMEOUT = 2
local MAX_TRIES = 3 -- proxy_next_upstream_tries of the template mode

local _M = {}
local parsed = {} -- upstream -> {value = entry, peers = {{address, host, port}, ...}, canary = {...}, weight = W}
local spread = {} -- upstream -> requests routed while it had a canary; per worker
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

local function weight_of(item)
    local weight = tonumber(string.match(item, "^|(%d+)$"))
    if weight and weight >= 1 and weight <= 99 then
        return weight
    end
    return nil
end

local function route_of(upstream, value)
    local cached = parsed[upstream]
    if cached and cached.value == value then
        return cached
    end
    local peers, canary, weight = {}, {}, nil
    for item in string.gmatch(value, "[^,]+") do
        local host, port = split(item)
        if host then
            local side = weight and canary or peers
            side[#side + 1] = { item, host, port }
        elseif weight == nil then
            weight = weight_of(item)
        end
    end
    if weight and (#canary == 0 or #peers == 0) then
        for _, peer in ipairs(canary) do
            peers[#peers + 1] = peer
        end
        canary, weight = {}, nil
    end
    cached = { value = value, peers = peers, canary = canary, weight = weight }
    parsed[upstream] = cached
    return cached
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
    local route = route_of(upstream, value)
    local peers, others, group = route.peers, route.canary, upstream
    if #peers == 0 then
        ngx.status = ngx.HTTP_SERVICE_UNAVAILABLE
        ngx.say("no live instance of ", app, " in ", env)
        return ngx.exit(ngx.HTTP_SERVICE_UNAVAILABLE)
    end
    if route.weight then
        local n = spread[upstream] or 0
        spread[upstream] = n + 1
        if math.floor((n + 1) * route.weight / 100) > math.floor(n * route.weight / 100) then
            peers, others, group = route.canary, route.peers, upstream .. "|canary"
        end
    end
    local start = (turn[group] or 0) % #peers + 1
    turn[group] = start
    -- A failed connection tries the request's own side first, then the other side of a split: a member
    -- that is stopping (retired, or an aborted canary) never costs a request while another one answers.
    ngx.ctx.shipline = {
        peers = peers, others = others, start = start, tried = {}, upstream = upstream,
        measure = route.weight ~= nil,
    }
end

local function fields(text)
    local found = {}
    for item in string.gmatch(text or "", "[^,%s]+") do
        if item ~= ":" then
            found[#found + 1] = item
        end
    end
    return found
end

-- log_by_lua: while the upstream has a canary, count every attempt of the request on its member.
function _M.record()
    local state = ngx.ctx.shipline
    if state == nil or not state.measure then
        return
    end
    local addresses = fields(ngx.var.upstream_addr)
    local statuses = fields(ngx.var.upstream_status)
    local times = fields(ngx.var.upstream_response_time)
    for i, address in ipairs(addresses) do
        local peer = state.upstream .. " " .. address
        stats:incr("n " .. peer, 1, 0)
        local status = tonumber(statuses[i])
        if status == nil or status >= 500 then
            stats:incr("e " .. peer, 1, 0)
        end
        local ms = (tonumber(times[i]) or 0) * 1000
        local bucket = 0
        if ms > 1 then
            bucket = math.min(MAX_BUCKET, math.ceil(math.log(ms) / LATENCY_STEP))
        end
        stats:incr("b " .. peer .. " " .. bucket, 1, 0)
    end
end

-- balancer_by_lua: the next member for this attempt.
function _M.balance()
    local state = ngx.ctx.shipline
    local peers, others, now = state.peers, state.others or {}, ngx.now()
    if state.current == nil then
        local more = math.min(#peers + #others, MAX_TRIES) - 1
        if more > 0 then
            balancer.set_more_tries(more)
        end
    elseif balancer.get_last_failure() == "failed" then
        failed[state.current] = now
    end
    local pick, fallback
    for i = 0, #peers + #others - 1 do
        local peer
        if i < #peers then
            peer = peers[(state.start + i - 1) % #peers + 1]
        else
            peer = others[i - #peers + 1]
        end
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
    local markers = 0
    for item in string.gmatch(members, "[^,]+") do
        if string.sub(item, 1, 1) == "|" then
            markers = markers + 1
            if not weight_of(item) or markers > 1 then
                return false, "not one canary weight |1..|99: " .. item
            end
        elseif not split(item) then
            return false, "not ip:port: " .. item
        end
    end
    return true
end

-- GET /routes/stats?upstream=NAME: "MEMBER ATTEMPTS 5XX BUCKET:COUNT,..." per member of NAME's canary counts.
local function serve_stats(upstream)
    if upstream == nil or not string.match(upstream, UPSTREAM) then
        ngx.status = ngx.HTTP_BAD_REQUEST
        ngx.say("upstream=NAME is required")
        return ngx.exit(ngx.HTTP_BAD_REQUEST)
    end
    local members = {}
    local function member(address)
        members[address] = members[address] or { n = 0, e = 0, b = {} }
        return members[address]
    end
    for _, key in ipairs(stats:get_keys(0)) do
        local kind, name, address, bucket = string.match(key, "^(%a) (%S+) (%S+) ?(%d*)$")
        if name == upstream then
            local count = stats:get(key) or 0
            if kind == "b" then
                local seen = member(address)
                seen.b[#seen.b + 1] = bucket .. ":" .. count
            elseif kind == "n" or kind == "e" then
                member(address)[kind] = count
            end
        end
    end
    for address, seen in pairs(members) do
        ngx.say(address, " ", seen.n, " ", seen.e, " ", table.concat(seen.b, ","))
    end
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
        if ngx.var.uri == "/routes/stats" then
            return serve_stats(ngx.var.arg_upstream)
        end
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
