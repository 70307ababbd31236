-- wrk script for POST /admin/masters (scripts/bench.d/10-admin): a unique
-- master name per request, since names are unique and a repeat answers 409.
-- Names are "bench-<BENCH_TAG>-<wrk pid>-<thread>-<n>": the pid keeps the
-- warm-up run and the measured run apart, BENCH_TAG (set by the section)
-- keeps runs against the same stack apart. Headers (Authorization,
-- Content-Type) come from wrk's -H options.
local function process_id()
    local f = io.open("/proc/self/stat")
    if f == nil then
        return tostring(os.time())
    end
    local pid = f:read("*n")
    f:close()
    return tostring(pid)
end

local tag = (os.getenv("BENCH_TAG") or "") .. "-" .. process_id()
local counter = 0
local next_thread = 0

function setup(thread)
    next_thread = next_thread + 1
    thread:set("tid", next_thread)
end

function request()
    counter = counter + 1
    local body = string.format('{"name":"bench-%s-%d-%d"}', tag, tid, counter)
    return wrk.format("POST", nil, nil, body)
end
