-- Room logic module: acts on the other modules of its system(s).
--
-- `power_on()` / `power_off()` switch every projector (pjlink.lua) of the
-- system and report each result; one failing projector does not stop the
-- others. Status: `projectors`, `last_action`, `last_ok`, `power`.

local M = {}

local function projectors()
  local list = {}
  for _, m in ipairs(system_modules()) do
    -- Stopped or disabled projectors are not part of the room right now.
    if m.driver == "pjlink.lua" and m.running then
      list[#list + 1] = m
    end
  end
  return list
end

local function all(action, method, ...)
  local results = array()
  local ok_count = 0
  local list = projectors()
  for _, m in ipairs(list) do
    local ok, res = pcall(call, m.id, method, ...)
    if ok then
      ok_count = ok_count + 1
      results[#results + 1] = { module = m.name, ok = true, result = res }
    else
      results[#results + 1] = { module = m.name, ok = false, error = tostring(res):match("^[^\n]*") }
    end
  end
  status.set("projectors", #list)
  status.set("last_action", action)
  status.set("last_ok", ok_count)
  return { ok = ok_count == #list, count = #list, results = results }
end

function M.power_on()
  local r = all("power_on", "power", true)
  status.set("power", r.ok and "on" or "partial")
  return r
end

function M.power_off()
  local r = all("power_off", "power", false)
  status.set("power", r.ok and "off" or "partial")
  return r
end

--- projectors(): names and connection state of the system's projectors.
function M.projectors()
  local out = array()
  for _, m in ipairs(projectors()) do
    out[#out + 1] = { name = m.name, connected = m.connected }
  end
  return out
end

return M
