-- wrk script: PUT objects of OBJECT_SIZE bytes into the store instance at OBJECT_BASE
-- (".../instances/ID/objects/"). With OBJECT_NAMING=unique every request creates a new object
-- (wrk builds each request); with OBJECT_NAMING=overwrite every thread overwrites its own
-- object with one prebuilt request, so large runs keep the database bounded.
local size = tonumber(os.getenv("OBJECT_SIZE"))
local base = os.getenv("OBJECT_BASE")
local unique = os.getenv("OBJECT_NAMING") == "unique"
local headers = {
  ["Authorization"] = "Bearer " .. os.getenv("KEYHOLD_TOKEN"),
  ["Content-Type"] = "application/octet-stream",
}
local body = string.rep("k", size)
local threads = 0
local id, counter, prebuilt = 0, 0, nil

function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end

function init(args)
  if not unique then
    prebuilt = wrk.format("PUT", base .. "bench-" .. id, headers, body)
  end
end

function request()
  if prebuilt then return prebuilt end
  counter = counter + 1
  return wrk.format("PUT", base .. "t" .. id .. "-" .. counter, headers, body)
end
