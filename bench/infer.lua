-- wrk script: POST /api/infer as a rotating set of users.
-- TOKENS_FILE names a file with one access token per line.
local tokens = {}
local idx = 0

function init(args)
  for line in io.lines(os.getenv("TOKENS_FILE")) do
    tokens[#tokens + 1] = line
  end
  idx = math.random(#tokens)
end

local model = os.getenv("MODEL") or "seedream_image"
local body = '{"modelId":"' .. model .. '","inputs":{"prompt":"a majestic dragon"},"params":{}}'

function request()
  idx = idx % #tokens + 1
  return wrk.format("POST", "/api/infer", {
    ["Content-Type"] = "application/json",
    ["Cookie"] = "lr_session=" .. tokens[idx],
  }, body)
end

local non200 = 0
function response(status, headers, body)
  if status ~= 200 then non200 = non200 + 1 end
end

function done(summary, latency, requests)
  io.write(string.format("requests: %d, errors(socket): %d, p50: %.1f ms, p99: %.1f ms\n",
    summary.requests, summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
