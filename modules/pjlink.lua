-- PJLink class 1 projector driver (TCP port 4352).
--
-- Speaks the PJLink class 1 protocol: power with warm-up and cool-down
-- states, input select, AV mute, error status and lamp hours, with or
-- without MD5 authentication (setting `password`). Status keys: power
-- ("off", "on", "warming", "cooling"), input, mute, errors, lamp_hours,
-- auth_error.

local M = {}

-- Settings the API, exports and logs never show (read from this text by
-- src/model/secrets.rs; `password` would be secret by its name anyway).
local secrets = { "password" }

M.framing = { delimiter = "\r" }
M.queue = { timeout = 3000, retries = 1 }

local POWER = { ["0"] = "off", ["1"] = "on", ["2"] = "cooling", ["3"] = "warming" }
local ERRORS = {
  ERR1 = "undefined command",
  ERR2 = "out of parameter",
  ERR3 = "unavailable time",
  ERR4 = "projector failure",
}
local LEVELS = { ["0"] = "ok", ["1"] = "warning", ["2"] = "error" }

-- Digest to put in front of the next command: set from the greeting, used
-- once (the connection stays authenticated afterwards).
local digest = nil
local greeted = false
local poll_timer = nil

local function wait_greeting()
  local waited = 0
  while not greeted do
    if waited >= 3000 then
      error("projector did not greet (no PJLINK line)", 0)
    end
    sleep(20)
    waited = waited + 20
  end
end

-- Sends `%1NAME param` and returns the answer after `=`; raises on ERRx.
local function command(name, param)
  if not connected() then
    error("projector not connected", 0)
  end
  wait_greeting()
  local line = "%1" .. name .. " " .. param .. "\r"
  if digest then
    line = digest .. line
    digest = nil
  end
  local reply = request(line, { expect = "%1" .. name .. "=" })
  local value = reply:sub(#name + 4)
  local err = ERRORS[value]
  if err then
    error(name .. ": " .. err .. " (" .. value .. ")", 0)
  end
  return value
end

local function update_power(value)
  local p = POWER[value] or "unknown"
  status.set("power", p)
  return p
end

local function stop_polling()
  if poll_timer then
    cancel(poll_timer)
    poll_timer = nil
  end
end

-- While warming or cooling, ask the projector until it settles.
local function poll_transition()
  stop_polling()
  poll_timer = every(setting("poll_ms") or 1000, function()
    local p = update_power(command("POWR", "?"))
    if p == "on" or p == "off" then
      stop_polling()
      if p == "on" then
        M.poll()
      end
    end
  end)
end

function M.on_connect()
  greeted = false
  digest = nil
end

function M.on_disconnect()
  greeted = false
  stop_polling()
end

function M.on_received(data)
  if data == "PJLINK 0" then
    greeted = true
    status.set("auth_error", false)
  elseif data:sub(1, 9) == "PJLINK 1 " then
    local password = setting("password")
    if password == nil then
      log.error("projector requires a password and none is set")
      status.set("auth_error", true)
      return
    end
    digest = md5_hex(data:sub(10) .. password)
    greeted = true
  elseif data == "PJLINK ERRA" then
    log.error("authentication failed: wrong password")
    status.set("auth_error", true)
  else
    log.debug("unsolicited: " .. data)
  end
end

--- power(on): true/"on" powers on (warm-up follows), false/"off" powers off.
function M.power(on)
  if on == "on" then on = true elseif on == "off" then on = false end
  if type(on) ~= "boolean" then
    bad_args("power expects true/false or \"on\"/\"off\", got " .. type(on))
  end
  command("POWR", on and "1" or "0")
  local p = update_power(command("POWR", "?"))
  if p == "warming" or p == "cooling" then
    poll_transition()
  end
  return p
end

function M.power_query()
  return update_power(command("POWR", "?"))
end

--- input(code): selects an input by its PJLink code, e.g. "31" (digital 1).
function M.input(code)
  if type(code) == "number" then code = tostring(math.tointeger(code) or code) end
  if type(code) ~= "string" or not code:match("^%d%d$") then
    bad_args("input expects a two-digit input code such as \"31\"")
  end
  command("INPT", code)
  status.set("input", code)
  return code
end

function M.input_query()
  local v = command("INPT", "?")
  status.set("input", v)
  return v
end

function M.inputs()
  local list = array()
  for code in command("INST", "?"):gmatch("%S+") do
    list[#list + 1] = code
  end
  return list
end

--- mute(on): AV mute (picture and sound).
function M.mute(on)
  if type(on) ~= "boolean" then
    bad_args("mute expects true or false")
  end
  command("AVMT", on and "31" or "30")
  status.set("mute", on)
  return on
end

function M.mute_query()
  local v = command("AVMT", "?")
  local on = v:sub(2, 2) == "1"
  status.set("mute", on)
  return on
end

function M.errors()
  local v = command("ERST", "?")
  local names = { "fan", "lamp", "temperature", "cover", "filter", "other" }
  local out = {}
  for i, n in ipairs(names) do
    out[n] = LEVELS[v:sub(i, i)] or "unknown"
  end
  status.set("errors", out)
  return out
end

function M.lamp()
  local v = command("LAMP", "?")
  local hours, on = v:match("^(%d+) ([01])")
  if not hours then
    error("unexpected LAMP answer: " .. v, 0)
  end
  hours = math.tointeger(tonumber(hours))
  status.set("lamp_hours", hours)
  return { hours = hours, on = on == "1" }
end

--- info(): projector name, manufacturer, product, other information, class.
function M.info()
  local out = {
    name = command("NAME", "?"),
    manufacturer = command("INF1", "?"),
    product = command("INF2", "?"),
    other = command("INFO", "?"),
    class = command("CLSS", "?"),
  }
  status.set("info", out)
  return out
end

--- poll(): refreshes power, and input and mute when on, errors and lamp.
function M.poll()
  local p = M.power_query()
  if p == "on" then
    M.input_query()
    M.mute_query()
  end
  M.errors()
  M.lamp()
  return p
end

return M
