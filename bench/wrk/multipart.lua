-- POST the image named by IMGCLASS_BENCH_IMAGE as multipart field "image" (or the
-- field named by IMGCLASS_BENCH_FIELD: TorchServe reads "data"), and print the run's
-- figures as one JSON line for bench/wrk_load.py.
local path = os.getenv("IMGCLASS_BENCH_IMAGE")
local field = os.getenv("IMGCLASS_BENCH_FIELD") or "image"
local file = assert(io.open(path, "rb"))
local content = file:read("*a")
file:close()

local boundary = "imgclass-bench-boundary-7d3f"
local name = path:match("([^/]+)$")
wrk.method = "POST"
wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
wrk.body = "--" .. boundary .. "\r\n"
  .. 'Content-Disposition: form-data; name="' .. field .. '"; filename="' .. name .. '"\r\n'
  .. "Content-Type: application/octet-stream\r\n\r\n"
  .. content .. "\r\n--" .. boundary .. "--\r\n"

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "non_2xx": %d, "socket_errors": %d, ' ..
    '"timeouts": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
