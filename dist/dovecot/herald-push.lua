-- herald-push.lua: Dovecot push_notification Lua driver that tells herald at once when mail
-- arrives, so it need not wait for Dovecot's IDLE notice (held 500 ms).
--
-- Installed as /usr/share/herald/dovecot-push.lua. In dovecot.conf (see herald's README,
-- "Fast path: Dovecot push"):
--
--   mail_plugins = $mail_plugins notify push_notification mail_lua push_notification_lua
--   plugin {
--     push_notification_driver = lua:file=/usr/share/herald/dovecot-push.lua
--     herald_push_url = http://127.0.0.1:9469/push   # herald's [server] listen
--     #herald_push_token = <the same secret as herald's [server] push_token>   (optional)
--     #herald_push_timeout = 0.5                      # seconds (optional)
--   }
--
-- Needs lua-socket (Debian: apt-get install lua-socket).
--
-- What it does: for each mailbox that got new mail in a transaction (MessageNew: LDA/LMTP
-- delivery; MessageAppend: IMAP APPEND), one POST of a small JSON hint
--   {"user":"...","mailbox":"...","uidvalidity":N,"uid":N}
-- to herald_push_url. herald trusts nothing in it: it only says which mailbox to look at.
--
-- Why it must be quick: Dovecot runs this while it delivers, so the delivery (the LMTP 250,
-- the APPEND OK) waits for it. Every connect, send and read is bounded by herald_push_timeout
-- (0.5 s by default), nothing is retried, and after one failure the rest of the transaction's
-- hints are dropped: a stopped herald costs a refused connection, a stopped or wedged one at
-- most about the timeout. IDLE still brings herald any mail a lost hint was about.

local socket = require("socket")
local url = require("socket.url")

local DEFAULT_TIMEOUT = 0.5

-- Lua 5.4 may hand numbers over as floats, which would print as "3.0"; herald wants integers.
local function integer(value)
  local n = tonumber(value)
  if n == nil or n ~= n or n == math.huge or n == -math.huge then
    return "0"
  end
  return string.format("%d", math.floor(n))
end

-- A JSON string: quotes, backslashes and control characters escaped; other bytes as they are.
local function json_string(value)
  local s = tostring(value or "")
  s = s:gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' end
    if c == "\\" then return "\\\\" end
    return string.format("\\u%04x", c:byte())
  end)
  return '"' .. s .. '"'
end

-- Header values must not carry a line break (a token read from a file may end in one).
local function header_value(value)
  return (tostring(value):gsub("[%c]", ""))
end

-- POSTs body to target; true when herald answered 2xx. Any failure returns false at once.
local function post(target, token, timeout, body)
  local host, port, path = target.host, target.port, target.path
  local ipv6 = host:find(":", 1, true) ~= nil
  local conn = ipv6 and socket.tcp6() or socket.tcp()
  if conn == nil then
    return false
  end
  conn:settimeout(timeout)
  local ok = conn:connect(host, port)
  if not ok then
    conn:close()
    return false
  end
  local request = "POST " .. path .. " HTTP/1.1\r\n" ..
    "Host: " .. (ipv6 and "[" .. host .. "]" or host) .. ":" .. port .. "\r\n" ..
    "Content-Type: application/json\r\n" ..
    "Content-Length: " .. #body .. "\r\n" ..
    "Connection: close\r\n"
  if token ~= nil and token ~= "" then
    request = request .. "X-Herald-Token: " .. header_value(token) .. "\r\n"
  end
  request = request .. "\r\n" .. body
  if not conn:send(request) then
    conn:close()
    return false
  end
  -- The status line is all we wait for: herald answers before it fetches.
  local status = conn:receive("*l")
  conn:close()
  return status ~= nil and status:match("^HTTP/%d%.%d 2%d%d") ~= nil
end

function dovecot_lua_notify_begin_txn(user)
  local raw = user:plugin_getenv("herald_push_url")
  local target = nil
  if raw ~= nil and raw ~= "" then
    local parsed = url.parse(raw)
    if parsed ~= nil and parsed.scheme == "http" and parsed.host ~= nil then
      target = {
        host = parsed.host,
        port = tonumber(parsed.port) or 80,
        path = parsed.path or "/push",
      }
    elseif type(dovecot) == "table" and dovecot.i_warning ~= nil then
      -- Said on every delivery, so a mistake is noticed; herald's push-test says it too.
      dovecot.i_warning("herald-push: herald_push_url must be http://HOST:PORT/push; no push sent")
    end
  end
  return {
    user = user.username,
    target = target,
    token = user:plugin_getenv("herald_push_token"),
    timeout = tonumber(user:plugin_getenv("herald_push_timeout")) or DEFAULT_TIMEOUT,
    -- mailbox name -> {uidvalidity, uid}: one hint per mailbox, naming its highest new UID.
    mailboxes = {},
    order = {},
  }
end

local function note(ctx, event)
  if ctx.target == nil or event.mailbox == nil then
    return
  end
  local seen = ctx.mailboxes[event.mailbox]
  if seen == nil then
    table.insert(ctx.order, event.mailbox)
    ctx.mailboxes[event.mailbox] = {uidvalidity = event.uid_validity, uid = event.uid}
  elseif (tonumber(event.uid) or 0) > (tonumber(seen.uid) or 0) then
    seen.uid = event.uid
  end
end

function dovecot_lua_notify_event_message_new(ctx, event)
  note(ctx, event)
end

function dovecot_lua_notify_event_message_append(ctx, event)
  note(ctx, event)
end

function dovecot_lua_notify_end_txn(ctx)
  if ctx.target == nil then
    return
  end
  for _, mailbox in ipairs(ctx.order) do
    local seen = ctx.mailboxes[mailbox]
    local body = "{" ..
      '"user":' .. json_string(ctx.user) .. "," ..
      '"mailbox":' .. json_string(mailbox) .. "," ..
      '"uidvalidity":' .. integer(seen.uidvalidity) .. "," ..
      '"uid":' .. integer(seen.uid) .. "}"
    if not post(ctx.target, ctx.token, ctx.timeout, body) then
      -- herald is down or slow: do not make this delivery wait for it again.
      return
    end
  end
end
