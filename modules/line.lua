-- Generic line-protocol device driver.
--
-- Lines end with the `delimiter` setting ("\n" by default). Every line of
-- the form `key=value` the device sends (answer or unsolicited) becomes the
-- status variable `key`; other lines are kept in status `last_line`.

local M = {}

local function delimiter()
  return setting("delimiter") or "\n"
end

M.framing = function(settings)
  return { delimiter = settings.delimiter or "\n" }
end
M.queue = { timeout = 2000 }

local function absorb(line)
  local k, v = line:match("^([%w_%.%-]+)=(.*)$")
  if k then
    status.set(k, v)
  else
    status.set("last_line", line)
  end
end

local function text_arg(name, v)
  if type(v) == "number" then return tostring(v) end
  if type(v) ~= "string" then
    bad_args(name .. " must be a string, got " .. type(v))
  end
  if v:find(delimiter(), 1, true) then
    bad_args(name .. " must not contain the line delimiter")
  end
  return v
end

function M.on_connect()
  log.info("line device connected")
end

function M.on_received(line)
  absorb(line)
end

--- send(text): sends one line, does not wait.
function M.send(text)
  send(text_arg("text", text) .. delimiter())
  return true
end

--- request(text, timeout_ms?): sends one line and returns the answer line.
function M.request(text, timeout_ms)
  local reply = request(text_arg("text", text) .. delimiter(), { timeout = timeout_ms })
  absorb(reply)
  return reply
end

function M.get(key)
  local reply = request("GET " .. text_arg("key", key) .. delimiter())
  if reply:sub(1, 4) == "ERR " then
    error(reply:sub(5), 0)
  end
  absorb(reply)
  return reply:match("^[^=]*=(.*)$")
end

function M.set(key, value)
  local reply = request("SET " .. text_arg("key", key) .. " " .. text_arg("value", value) .. delimiter())
  absorb(reply)
  return reply:match("^[^=]*=(.*)$")
end

function M.ping()
  return request("PING" .. delimiter(), { expect = "PONG" }) == "PONG"
end

return M
